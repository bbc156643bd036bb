"""One validation run: the suite on each model in turn, within the memory budget, then the models that were loaded
before are loaded again.

A model that cannot fit (the memory-fit estimator, as ``check-memory`` says) is skipped with the reason; one that
fits only once idle models are unloaded gets them unloaded first. Local scorers score each answer as it comes; a
case with ``similar`` or ``judge`` is scored once the model's answers are in (the model unloaded first when the run
loaded it), so that the model and the judge do not take turns in memory. If Ollama goes away mid-run the run is
marked failed and no model is demoted or promoted on partial data; a model whose own answers fail (a crashed
runner) is marked failed and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from singularity_ops.config import Config
from singularity_ops.controllers.model_manager.plan import resolve
from singularity_ops.controllers.validator import results as store
from singularity_ops.controllers.validator.ollama import OllamaHelpers, ValidatorClient
from singularity_ops.controllers.validator.progress import Progress
from singularity_ops.controllers.validator.results import CaseResult, ModelResult
from singularity_ops.controllers.validator.scorers import Verdict
from singularity_ops.controllers.validator.suite import Case, Suite
from singularity_ops.errors import OllamaError, SingularityError
from singularity_ops.memory import assess_fit, estimate_need, measure_budget
from singularity_ops.ollama_api import InstalledModel, LoadedModel, client_for
from singularity_ops.ollama_state import OllamaSnapshot, OllamaState
from singularity_ops.store import Database

log = logging.getLogger(__name__)
EMBEDDING_FAMILIES = {"bert", "nomic-bert", "jina-bert-v2"}  # for an Ollama too old to list capabilities
FOREVER = timedelta(days=365)  # an expiry further away than this was keep_alive -1
UNLOAD_WAIT_SECONDS = 30.0


class RunAborted(SingularityError):
    """Ollama went away mid-run: the run is failed, nothing is decided."""


class ValidationBusy(SingularityError):
    pass


@dataclass
class RunReport:
    run_id: int
    suite: Suite
    status: str = "running"  # ok, failed
    error: str | None = None
    models: list[ModelResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "suite": self.suite.as_json(), "status": self.status, "error": self.error,
                "models": [m.as_json() for m in self.models]}


def utc_now() -> datetime:
    return datetime.now(UTC)


class ValidationRun:
    def __init__(self, config: Config, database: Database, suite: Suite, *, progress: Progress | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.settings = config.validator
        self.database = database
        self.suite = suite
        self.progress = progress or Progress()
        self.clock = clock
        self.reserve_bytes = max(config.model_manager.reserve_bytes, config.memory.reserve_bytes)
        keep_alive = self.settings.keep_alive
        self.keep_alive: str | int = int(keep_alive) if keep_alive.lstrip("-").isdigit() else keep_alive
        self.client = client_for(config, kind=ValidatorClient)
        self.generator = client_for(config, self.settings.case_timeout_seconds, ValidatorClient)
        self.loader = client_for(config, config.model_manager.load_timeout_seconds, ValidatorClient)
        self.state = OllamaState(self.client, 0)  # keeps /api/show answers per digest between looks
        self.helpers = OllamaHelpers(self.generator, self.settings.embedding_model, self.settings.judge_model,
                                     self.keep_alive)
        self._used: set[str] = set()  # models this run made Ollama load

    def close(self) -> None:
        for client in (self.client, self.generator, self.loader):
            client.close()

    # --- the run -------------------------------------------------------------------------------------------

    def run(self, models: Sequence[str] | None = None, *, demote: bool = True, trigger: str = "manual") -> RunReport:
        """Validate ``models`` (default: ``validator.models``, else every installed model). Raises OllamaError when
        Ollama is unavailable at the start, ValidationBusy while another run holds the lock."""
        with self.database.connect(autocommit=True) as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (store.LOCK_KEY,)).fetchone()
            if not (row and row[0]):
                raise ValidationBusy("another validation run is in progress (the validator controller or another "
                                     "`validate`); try again when it has finished")
            store.fail_interrupted(conn)
            try:
                return self._run(conn, models, demote, trigger)
            finally:
                self.close()

    def _run(self, conn: psycopg.Connection, models: Sequence[str] | None, demote: bool, trigger: str) -> RunReport:
        snapshot = self._snapshot()
        targets = self._targets(snapshot, list(models or self.settings.models))
        self._check_helpers(snapshot)
        run_id = store.start_run(conn, self.clock(), trigger, self.suite.name, self.suite.hash, demote)
        report = RunReport(run_id, self.suite)
        previous = list(snapshot.loaded)
        self.progress.start(sum(1 for _, skip in targets if skip is None) * len(self.suite.cases))
        try:
            for model, skip in targets:
                if skip is not None:
                    self.progress.note(f"{model.name}: skipped: {skip}")
                    self._record(conn, report, ModelResult(model.name, model.digest, "skipped", skip))
                    continue
                result = ModelResult(model.name, model.digest, "ok")
                try:
                    self._validate(model, {m.name for m in previous}, result)
                finally:  # a model cut short by Ollama going away is kept too, as failed
                    if result.accuracy is None and result.cases:
                        result.summarise()
                    self._record(conn, report, result)
            self._decide(conn, report, demote)
            report.status = "ok"
            store.finish_run(conn, run_id, self.clock(), "ok")
            store.prune(conn, self.clock(), self.settings.retention_days)
        except RunAborted as exc:
            report.status, report.error = "failed", str(exc)
            for result in report.models:
                if result.status != "skipped":
                    result.status, result.reason = "failed", f"run failed, nothing decided: {exc}"
                    store.update_status(conn, result)
            store.finish_run(conn, run_id, self.clock(), "failed", str(exc))
            self.progress.note(f"run failed: {exc}")
        finally:
            self._restore(previous)
            self.progress.finish()
        return report

    def _record(self, conn: psycopg.Connection, report: RunReport, result: ModelResult) -> None:
        result.at = self.clock()
        store.record_model(conn, report.run_id, self.suite.hash, result, self.settings.answer_excerpt_chars)
        report.models.append(result)

    def _decide(self, conn: psycopg.Connection, report: RunReport, demote: bool) -> None:
        statuses = store.current_status(conn)
        for result in report.models:
            if result.status != "ok" or result.accuracy is None:
                continue
            decision = store.decide(result.accuracy, self.settings.min_accuracy, self.settings.promote_margin,
                                    statuses.get(result.model), report.run_id, demote)
            result.status, result.reason = decision.status, decision.reason
            store.apply_decision(conn, result.model, decision)
            store.update_status(conn, result)
            if decision.model_status is not None:
                log.info("validation: %s %s: %s", result.model, decision.status, decision.reason)

    # --- which models --------------------------------------------------------------------------------------

    def _snapshot(self) -> OllamaSnapshot:
        snapshot = self.state.snapshot()
        if not snapshot.up:
            raise OllamaError(snapshot.error or f"Ollama at {self.config.ollama.host} is unavailable")
        return snapshot

    def _targets(self, snapshot: OllamaSnapshot, wanted: list[str]) -> list[tuple[InstalledModel, str | None]]:
        """The models to validate, in Ollama's order, each with the reason it is skipped (None: validated)."""
        installed = {m.name: m for m in snapshot.installed}
        if wanted:
            names = []
            for name in wanted:
                found = resolve(name, list(installed))
                if found is None:
                    known = ", ".join(installed) or "none"
                    raise SingularityError(f"model '{name}' is not installed in Ollama (installed: {known})")
                names.append(found)
        else:
            names = list(installed)
        return [(installed[name], "embedding-only model: it does not generate text"
                 if self._embedding_only(installed[name]) else None) for name in dict.fromkeys(names)]

    def _embedding_only(self, model: InstalledModel) -> bool:
        try:
            capabilities = self.client.capabilities(model.name)
        except OllamaError:
            capabilities = None
        if capabilities is not None:
            return "completion" not in capabilities
        return model.family in EMBEDDING_FAMILIES

    def _check_helpers(self, snapshot: OllamaSnapshot) -> None:
        installed = [m.name for m in snapshot.installed]
        for kind, key, name in (("judge", "judge_model", self.settings.judge_model),
                                ("similar", "embedding_model", self.settings.embedding_model)):
            if kind not in self.suite.needs:
                continue
            if not name:
                raise SingularityError(f"suite {self.suite.name} has '{kind}' cases: set validator.{key}")
            found = resolve(name, installed)
            if found is None:
                raise SingularityError(f"validator.{key} {name!r} is not installed in Ollama; pull it with: "
                                       f"ollama pull {name}")
            setattr(self.helpers, key, found)

    # --- one model -----------------------------------------------------------------------------------------

    def _validate(self, model: InstalledModel, previous: set[str], result: ModelResult) -> ModelResult:
        cases = self.suite.cases
        room = self._make_room(model)
        if room is not None:
            self.progress.skip(model.name, len(cases), room)
            result.status, result.reason = "skipped", room
            return result
        self.progress.model(model.name)
        self._used.add(model.name)
        deferred: list[tuple[Case, CaseResult]] = []
        for index, case in enumerate(cases):
            outcome = CaseResult(case.id, case.weight)
            result.cases.append(outcome)
            try:
                answer = self.generator.chat(model.name, list(case.messages), case.options, self.keep_alive)
            except OllamaError as exc:
                self._abort_if_down(exc)
                outcome.error = str(exc)
                self.progress.case(model.name, case.id, False, str(exc))
                self.progress.skip(model.name, len(cases) - index - 1, "its answers fail; its other cases go unasked")
                return self._failed(result, f"case {case.id}: {exc}")
            outcome.answer, outcome.latency_seconds = answer.text, answer.latency_seconds
            outcome.output_tokens, outcome.generation_seconds = answer.output_tokens, answer.generation_seconds
            if any(scorer.remote for scorer in case.expect):
                deferred.append((case, outcome))
                self.progress.case(model.name, case.id, None)
            else:
                self._score(case, outcome)
                self.progress.case(model.name, case.id, outcome.passed)
        if deferred and model.name not in previous and model.name not in self._helper_models():
            self._unload(model.name)
        for case, outcome in deferred:
            try:
                self._score(case, outcome)
            except OllamaError as exc:
                self._abort_if_down(exc)
                return self._failed(result, f"scoring case {case.id}: {exc}")
        result.summarise()
        if model.name not in previous and model.name not in self._helper_models():
            self._unload(model.name)
        return result

    def _failed(self, result: ModelResult, reason: str) -> ModelResult:
        result.summarise()
        result.status, result.reason = "failed", f"{reason}; not decided on partial data"
        return result

    def _score(self, case: Case, outcome: CaseResult) -> None:
        """Every scorer of the case; a scorer that breaks is a failed verdict, never the end of the run. Ollama's
        errors (embedding, judge) are raised: the model's result is then incomplete."""
        verdicts = []
        for scorer in case.expect:
            try:
                verdicts.append(scorer.score(outcome.answer, case.question, self.helpers))
            except OllamaError:
                raise
            except Exception as exc:
                log.warning("scorer %s of case %s failed: %s: %s", scorer.kind, case.id, type(exc).__name__, exc)
                verdicts.append(Verdict(scorer.kind, False, f"scorer error: {type(exc).__name__}: {exc}"))
        outcome.verdicts = [v.as_json() for v in verdicts]
        outcome.passed = all(v.passed for v in verdicts)

    def _abort_if_down(self, exc: OllamaError) -> None:
        try:
            self.client.version()
        except OllamaError:
            raise RunAborted(f"Ollama went away during the run: {exc}") from None

    def _helper_models(self) -> set[str]:
        return {m for m in (self.helpers.judge_model, self.helpers.embedding_model) if m}

    # --- memory --------------------------------------------------------------------------------------------

    def _make_room(self, model: InstalledModel) -> str | None:
        """None when the model can be loaded (idle models unloaded first when needed), else why it cannot."""
        try:
            snapshot = self._snapshot()
        except OllamaError as exc:
            raise RunAborted(f"Ollama went away during the run: {exc}") from None
        if any(m.name == model.name for m in snapshot.loaded):
            return None
        need = estimate_need(model.size_bytes, snapshot.details_for(model.digest), self.config.memory)
        budget = measure_budget(self.config.memory.ollama_memory_bytes, snapshot.loaded_bytes)
        fit = assess_fit(need, budget, self.reserve_bytes)
        if not fit.fits:
            return fit.reason
        if need.total_bytes > budget.available_bytes - self.reserve_bytes:
            for loaded in snapshot.loaded:
                self._unload(loaded.name)
        return None

    def _unload(self, name: str) -> None:
        try:
            self.client.unload(name)
            deadline = time.monotonic() + UNLOAD_WAIT_SECONDS
            while time.monotonic() < deadline and any(m.name == name for m in self.client.loaded()):
                time.sleep(0.2)
        except OllamaError as exc:
            self._abort_if_down(exc)
            log.warning("validation: could not unload %s: %s", name, exc)

    def _restore(self, previous: list[LoadedModel]) -> None:
        """Unload what this run loaded, load again what was loaded before, each for the time it had left."""
        try:
            loaded = {m.name for m in self.client.loaded()}
            for name in sorted((loaded & (self._used | self._helper_models())) - {m.name for m in previous}):
                self.client.unload(name)
            now = datetime.now(UTC)
            for entry in previous:
                if entry.name in loaded:
                    continue
                keep_alive: str | int = self.settings.keep_alive
                if entry.expires_at is not None:
                    left = entry.expires_at - now
                    if left <= timedelta(0):
                        continue  # it would have been unloaded by now anyway
                    keep_alive = -1 if left > FOREVER else max(1, int(left.total_seconds()))
                self.loader.load(entry.name, keep_alive)
                log.info("validation: %s loaded again (keep_alive %s)", entry.name, keep_alive)
        except OllamaError as exc:
            log.warning("validation: could not restore the models loaded before the run: %s", exc)
