-- Admin calls at the gateway (pull, push, create, copy, delete, blob uploads) are audited in security_events:
-- kind 'admin', action 'allow' (let through: an admin key, or from loopback) or 'block' (403).
-- docs/ANOMALY_DETECTION.md, "Admin routes".

ALTER TABLE security_events DROP CONSTRAINT security_events_kind_check;
ALTER TABLE security_events ADD CONSTRAINT security_events_kind_check
    CHECK (kind IN ('rate', 'spike', 'brute_force', 'repeat', 'injection', 'admin'));
ALTER TABLE security_events DROP CONSTRAINT security_events_action_check;
ALTER TABLE security_events ADD CONSTRAINT security_events_action_check
    CHECK (action IN ('flag', 'throttle', 'block', 'ban', 'allow'));
