-- Breaker events get an id made by the gateway, like requests.id: the history writer may resend a batch whose
-- commit outcome was lost with its connection, and ON CONFLICT (event_id) DO NOTHING then records each
-- transition once. Rows written without one (NULL) are never treated as duplicates.
ALTER TABLE circuit_breaker_events ADD COLUMN event_id uuid UNIQUE;
