"""The deployment pipeline: every target runs its own job through connect → build → copy → check →
activate → verify → confirm, with one concurrency limit per stage, reporting to one event sink.

* **connect**: one asyncssh connection per target for the work (``~/.ssh/config`` honoured, host keys
  verified); the target's state is read and, for non-root users, sudo is proven to work (with the password
  asked once) on every such target before any of them changes.
* **build**: shared for the whole selection (``build_toplevels``); then the closures are signed with the
  fleet key once.
* **copy**: ``nix copy --to ssh-ng://host`` (only missing paths; ``--substitute-on-destination`` on request).
* **check**: the closure is a NixOS system (``nixos-version``); the current profile is one crossnix knows
  (deployed before, or present in the local store) unless ``--force``/``replace_unknown_profiles``.
* **activate**: ``deploy/target.sh begin`` arms the target's own rollback timer (magic rollback), sets the
  profile and starts ``switch-to-configuration`` detached (``systemd-run``, or ``setsid`` without systemd),
  so a dropped connection does not kill it; the job waits for it, logging in again if the connection broke.
* **verify**: a *fresh* login (a new connection, never the work one) checks ``/run/current-system`` and the
  profile, then the health checks run; **confirm** disarms the timer through that login. Failures roll back.

A failed target never stops the others. Ctrl-C once: targets that have not started activating stop (nothing
changed there), activations in flight finish and are verified and confirmed (or rolled back). Ctrl-C twice:
activations in flight are rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from crossnix_tasks import remote as rc
from crossnix_tasks import ssh
from crossnix_tasks.build import SystemsBuilt
from crossnix_tasks.deploy import health
from crossnix_tasks.deploy.events import BUILD_JOB, EventSink, Result, Stage
from crossnix_tasks.deploy.history import History
from crossnix_tasks.deploy.report import DeployReport, TargetReport
from crossnix_tasks.deploy.view import View
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import DeploySettings, Goal, Target
from crossnix_tasks.process import ProcessFailed
from crossnix_tasks.remote import STATE_ROOT, Activation, ActivationReport, Remote, RemoteError

FINAL_OUTCOMES = ("rolled-back", "rollback-failed", "not-changed", "confirmed", "kept")
RELOGIN_INTERVAL = 1.0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class DeployOptions:
    goal: Goal | None = None  # None: each target's deploy.goal
    parallel: int | None = None  # None: [defaults.deploy] parallel (the smallest of the selection)
    dry_run: bool = False
    force: bool = False  # replace a system profile crossnix does not know
    sudo_password: str | None = field(default=None, repr=False)
    run_id: str = field(default_factory=new_run_id)


@dataclass(frozen=True)
class CopyRequest:
    target: Target
    toplevel: str
    ssh_config: Path
    substitute_on_destination: bool
    no_check_sigs: bool


class Copier(Protocol):
    async def __call__(self, request: CopyRequest, log: Callable[[str], None]) -> None: ...


BuildFn = Callable[[Sequence[Target], Callable[[str], None]], Awaitable[SystemsBuilt]]
SignFn = Callable[[Sequence[str]], Awaitable[None]]
KnownFn = Callable[[str], Awaitable[bool]]


class _Refused(CrossnixError):
    """A safety check said no before anything changed on the target."""


class _Interrupted(Exception):
    pass


@dataclass
class _Job:
    target: Target
    report: TargetReport
    settings: DeploySettings
    goal: Goal
    started: float = 0.0
    task: asyncio.Task[None] | None = None
    critical: bool = False
    work: Remote | None = None
    state: rc.TargetState | None = None
    conns: list[asyncssh.SSHClientConnection] = field(default_factory=list)
    host: str = ""
    rolling_back: bool = False  # a second Ctrl-C leaves it alone: it is what Ctrl-C asks for


def _settled(report: ActivationReport, auto_rollback: bool) -> bool:
    if report.outcome in FINAL_OUTCOMES or report.status == "lost":
        return True
    if not report.finished:
        return False
    return report.succeeded or not auto_rollback


class Deployment:
    def __init__(
        self,
        targets: Sequence[Target],
        *,
        ssh_env: ssh.SshEnv,
        build: BuildFn,
        copy: Copier,
        options: DeployOptions,
        sink: EventSink,
        view: View | None = None,
        sign: SignFn | None = None,
        history: History | None = None,
        locally_known: KnownFn | None = None,
    ) -> None:
        self.targets = list(targets)
        self.ssh_env = ssh_env
        self.options = options
        self.sink = sink
        self.view = view or View()
        self._build_fn = build
        self._copy_fn = copy
        self._sign_fn = sign
        self.history = history or History(None)
        self._locally_known = locally_known
        parallel = options.parallel or min((t.deploy.parallel for t in self.targets), default=10)
        self.parallel = max(1, parallel)
        # Logins are cheap and let the shared build start early; copies and activations do the heavy work.
        self._connect_sem = asyncio.Semaphore(max(2 * self.parallel, 16))
        self._copy_sem = asyncio.Semaphore(self.parallel)
        self._activate_sem = asyncio.Semaphore(self.parallel)
        self.jobs: dict[str, _Job] = {}
        for target in self.targets:
            goal: Goal = options.goal or target.deploy.goal
            self.jobs[target.name] = _Job(
                target=target,
                report=TargetReport(target=target.name, address=target.address),
                settings=target.deploy,
                goal=goal,
            )
        self.interrupts = 0
        self._stopping = False
        self._build_task: asyncio.Task[SystemsBuilt] | None = None
        self._sign_task: asyncio.Task[None] | None = None
        password_jobs = [j for j in self.jobs.values() if j.target.user != "root" and options.sudo_password]
        self._sudo_pending = len(password_jobs)
        self._sudo_checked = asyncio.Event()
        if not self._sudo_pending:
            self._sudo_checked.set()
        self.notes: list[str] = []

    # Running -----------------------------------------------------------------------------------------------

    async def run(self) -> DeployReport:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        handler_installed = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self.interrupt)
            handler_installed = True
        self.sink.listeners.append(self.view)
        self.view.start(list(self.jobs))
        try:
            self._build_task = asyncio.create_task(self._build_all())
            for job in self.jobs.values():
                job.task = asyncio.create_task(self._run_job(job), name=f"deploy {job.target.name}")
            await asyncio.gather(*(j.task for j in self.jobs.values() if j.task is not None))
        finally:
            for task in (self._build_task, self._sign_task):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):  # retrieved even when no target waited for it
                    await task
            if handler_installed:
                loop.remove_signal_handler(signal.SIGINT)
            self.view.stop()
            self.sink.listeners.remove(self.view)
        report = DeployReport(
            run_id=self.options.run_id,
            goal=self.options.goal,
            dry_run=self.options.dry_run,
            targets=[j.report for j in self.jobs.values()],
            duration=time.monotonic() - started,
            interrupted=self.interrupts > 0,
            log_dir=str(self.sink.log_dir) if self.sink.log_dir else None,
            notes=self.notes,
        )
        for job in self.jobs.values():
            log = self.sink.log_for(job.target.name)
            job.report.log_file = str(log.path) if log.path else None
            job.report.log_tail = list(log.tail)
        self.sink.close()
        return report

    def interrupt(self) -> None:
        """Ctrl-C: the first stops what has not started changing targets, the second rolls back."""
        self.interrupts += 1
        self._stopping = True
        if self.interrupts == 1:
            in_flight = [j.target.name for j in self.jobs.values() if j.critical]
            self.view.note(
                "interrupted: stopping targets that have not started activating"
                + (f"; finishing the activation of {', '.join(in_flight)} (Ctrl-C again to roll them back)"
                   if in_flight else "")
            )
            if self._build_task is not None:
                self._build_task.cancel()
            for job in self.jobs.values():
                if not job.critical and job.task is not None:
                    job.task.cancel()
        elif self.interrupts == 2:
            self.view.note("interrupted again: rolling back the activations in flight")
            for job in self.jobs.values():
                if job.task is not None and not job.task.done() and not job.rolling_back:
                    job.task.cancel()
        else:
            self.view.note("still rolling back; please wait")

    # One target ------------------------------------------------------------------------------------------

    def _stage(self, job: _Job, stage: Stage, message: str = "") -> None:
        order = list(Stage)
        if order.index(stage) > order.index(job.report.stage) or stage == Stage.ROLLBACK:
            job.report.stage = stage
        self.sink.stage(job.target.name, stage, message)

    def _log(self, job: _Job) -> Callable[[str], None]:
        def log(line: str) -> None:
            self.sink.line(job.target.name, job.report.stage, line)

        return log

    def _finish(self, job: _Job, result: Result, message: str = "") -> None:
        job.report.result = result
        job.report.message = message
        job.report.duration = time.monotonic() - job.started
        self.sink.result(job.target.name, job.report.stage, result, message)

    async def _run_job(self, job: _Job) -> None:
        job.started = time.monotonic()
        try:
            await self._pipeline(job)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._finish(job, Result.INTERRUPTED, "interrupted before any change on this target")
        except ssh.SshError as exc:
            result = {
                "unreachable": Result.UNREACHABLE,
                "timeout": Result.UNREACHABLE,
                "host-key": Result.REFUSED,
            }.get(exc.kind, Result.FAILED)
            self._log(job)(exc.render())
            self._finish(job, result, exc.message.removeprefix(f"{job.target.name}: "))
        except _Refused as exc:
            self._log(job)(exc.render())
            self._finish(job, Result.REFUSED, exc.message)
        except (RemoteError, ProcessFailed, CrossnixError) as exc:
            self._log(job)(exc.render())
            self._finish(job, Result.FAILED, exc.message.splitlines()[0])
        except Exception as exc:  # a bug: report it on this target, keep the others going
            self._log(job)(f"internal error: {exc!r}")
            self._finish(job, Result.FAILED, f"internal error: {exc!r}")
        finally:
            await self._close(job)

    async def _close(self, job: _Job) -> None:
        for conn in job.conns:
            conn.close()
        for conn in job.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)
        job.conns.clear()

    async def _login(self, job: _Job) -> Remote:
        """A new SSH connection (a fresh login) to the target."""
        conn = await ssh.connect(job.target, self.ssh_env, config=self.ssh_env.config_path(job.target))
        job.conns.append(conn)
        return Remote(job.target, conn, sudo_password=self.options.sudo_password, log=self._log(job))

    async def _pipeline(self, job: _Job) -> None:
        target = job.target
        log = self._log(job)
        # connect ------------------------------------------------------------------------------------------
        async with self._connect_sem:
            try:
                self._stage(job, Stage.CONNECT, target.address)
                ssh.write_ssh_config(target, self.ssh_env)
                job.work = await self._login(job)
                peer = job.work.conn.get_extra_info("peername")
                job.host = str(peer[0]) if peer else (target.host or "")
                job.state = await rc.read_state(job.work)
                job.report.previous = job.state.profile or None
                job.report.previous_generation = job.state.generation
                job.report.generation = job.state.generation
                job.report.current_system = job.state.current or None
                try:
                    await rc.check_sudo(job.work, self.options.sudo_password)
                except RemoteError as exc:
                    raise _Refused(
                        f"{exc.message}; nothing was changed",
                        hint="pass --ask-sudo-password (or set ask_sudo_password = true for the target)"
                        if self.options.sudo_password is None
                        else None,
                    ) from None
            finally:
                if target.user != "root" and self.options.sudo_password:
                    self._sudo_pending -= 1
                    if self._sudo_pending == 0:
                        self._sudo_checked.set()
        if target.user != "root" and self.options.sudo_password:
            # The password is proven on every target that needs it before any of them changes.
            await self._sudo_checked.wait()
        # build --------------------------------------------------------------------------------------------
        self._stage(job, Stage.BUILD, "waiting for the shared build")
        assert self._build_task is not None
        try:
            systems = await asyncio.shield(self._build_task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, CrossnixError) else repr(exc)
            raise CrossnixError(f"build failed: {message.splitlines()[0]}") from None
        toplevel = systems.toplevels.get(target.name)
        if not toplevel:
            failure = systems.failures.get(target.name)
            if failure is None:
                raise CrossnixError("the build produced no system for this target (see the build log)")
            for line in failure.splitlines():
                log(line)
            raise CrossnixError(f"build failed: {failure.splitlines()[0]}")
        job.report.toplevel = toplevel
        log(f"system: {toplevel}")
        await self._guard_profile(job, toplevel)
        if self.options.dry_run:
            await self._plan(job, toplevel)
            return
        # copy ---------------------------------------------------------------------------------------------
        if self._sign_task is not None:
            await asyncio.shield(self._sign_task)
        async with self._copy_sem:
            self._stage(job, Stage.COPY, f"nix copy to {ssh.store_uri(target)}")
            await self._copy_fn(
                CopyRequest(
                    target=target,
                    toplevel=toplevel,
                    ssh_config=self.ssh_env.config_path(target),
                    substitute_on_destination=job.settings.substitute_on_destination,
                    no_check_sigs=target.user == "root",
                ),
                log,
            )
        # check --------------------------------------------------------------------------------------------
        self._stage(job, Stage.CHECK, "is it a NixOS system?")
        assert job.work is not None
        if not await rc.is_nixos_system(job.work, toplevel):
            raise _Refused(f"{toplevel} has no nixos-version: not a NixOS system, refusing to activate it")
        # activate -----------------------------------------------------------------------------------------
        async with self._activate_sem:
            if self._stopping:
                raise asyncio.CancelledError
            job.critical = True
            try:
                await self._activate(job, toplevel)
            finally:
                job.critical = False

    async def _guard_profile(self, job: _Job, toplevel: str) -> None:
        """colmena's unknown-profile check: never replace a system crossnix cannot account for."""
        state = job.state
        assert state is not None
        current = state.profile or state.current
        if not current or current == toplevel:
            return
        if self.options.force or job.settings.replace_unknown_profiles:
            return
        if self.history.knows(job.target.name, current):
            return
        if self._locally_known is not None and await self._locally_known(current):
            return
        raise _Refused(
            f"the target runs {current}, which crossnix did not deploy and the local store does not have; "
            "refusing to replace it",
            hint="pass --force (or set replace_unknown_profiles = true) to replace it anyway",
        )

    # Activation --------------------------------------------------------------------------------------------

    async def _activate(self, job: _Job, toplevel: str) -> None:
        log = self._log(job)
        settings = job.settings
        assert job.work is not None and job.state is not None
        if job.goal == "dry-activate":
            self._stage(job, Stage.ACTIVATE, "switch-to-configuration dry-activate")
            await rc.dry_activate(job.work, toplevel, time_limit=settings.activation_timeout)
            self._finish(job, Result.OK, "dry-activate: nothing changed")
            return
        plan = Activation(
            state_dir=f"{STATE_ROOT}/{self.options.run_id}",
            toplevel=toplevel,
            goal=job.goal,
            confirm_timeout=settings.confirm_timeout,
            activation_timeout=settings.activation_timeout,
            magic_rollback=settings.magic_rollback,
            auto_rollback=settings.auto_rollback,
            systemd=job.state.systemd,
            unit=f"crossnix-{self.options.run_id}",
        )
        how = "systemd-run" if plan.systemd else "setsid"
        armed = f"; rollback armed ({plan.confirm_timeout} s to confirm)" if plan.magic_rollback else ""
        self._stage(job, Stage.ACTIVATE, f"switch-to-configuration {job.goal} via {how}{armed}")
        # Shielded, and awaited before a rollback: a rollback racing `begin` would find nothing to settle (or a
        # half-written state directory) and `begin` would then activate the new system unopposed.
        starting = asyncio.ensure_future(rc.begin(job.work, plan))
        try:
            try:
                await asyncio.shield(starting)
            except rc.ConnectionLost:
                log("connection lost while starting the activation; logging in again")
            except RemoteError as exc:
                report = await self._report_after(job, plan)
                if report is None or report.outcome in ("not-changed", ""):
                    raise CrossnixError(f"activation did not start: {exc.message}; nothing was changed") from None
                await self._settle_failure(job, plan, report, f"activation did not start: {exc.message}")
                return
            report = await self._wait(job, plan)
            if report is None:
                self._finish(job, Result.FAILED, self._lost_message(plan))
                return
            if not report.succeeded or report.outcome in FINAL_OUTCOMES:
                await self._settle_failure(job, plan, report, self._failure_reason(plan, report))
                return
            await self._verify_and_confirm(job, plan)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if not starting.done():
                log("interrupted while the activation starts: rolling back once it has started")
                with contextlib.suppress(Exception):
                    await starting
            log("interrupted during the activation: rolling back")
            await self._rollback(job, plan, "interrupted (Ctrl-C)", "interrupted; {}")

    def _lost_message(self, plan: Activation) -> str:
        if plan.magic_rollback:
            return (
                "lost contact during the activation; the target restores its previous generation by itself "
                "unless confirmed (it was not)"
            )
        return "lost contact during the activation; the target's state is unknown (check with `inv status`)"

    @staticmethod
    def _failure_reason(plan: Activation, report: ActivationReport) -> str:
        if report.status == "lost":
            return "switch-to-configuration vanished without an exit status"
        if report.status.isdigit() and report.status != "0":
            return f"switch-to-configuration {plan.goal} failed (exit status {report.status})"
        return f"activation ended with outcome {report.outcome or 'unknown'}"

    async def _report_after(self, job: _Job, plan: Activation) -> ActivationReport | None:
        with contextlib.suppress(CrossnixError):
            remote = await self._login(job)
            return await rc.report(remote, plan.state_dir)
        return None

    async def _wait(self, job: _Job, plan: Activation) -> ActivationReport | None:
        """Wait for switch-to-configuration, logging in again when the connection drops."""
        log = self._log(job)
        deadline = time.monotonic() + plan.activation_timeout + 2
        remote = job.work
        assert remote is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                report = await rc.wait(remote, plan.state_dir, int(min(10, max(1, remaining))))
            except (rc.ConnectionLost, rc.RemoteTimeout) as exc:
                log(f"{exc.message}; the activation goes on detached: logging in again")
                relogin = await self._relogin(job, deadline)
                if relogin is None:
                    return None
                remote = relogin
                continue
            if _settled(report, plan.auto_rollback):
                return report
        log(f"activation still running after {plan.activation_timeout} s: stopping it")
        return await rc.rollback(remote, plan.state_dir, f"activation timed out after {plan.activation_timeout} s")

    async def _relogin(self, job: _Job, deadline: float) -> Remote | None:
        log = self._log(job)
        while time.monotonic() < deadline:
            try:
                return await self._login(job)
            except ssh.SshError as exc:
                log(f"login failed: {exc.message}")
                if exc.kind == "host-key":
                    return None
            await asyncio.sleep(RELOGIN_INTERVAL)
        return None

    async def _settle_failure(self, job: _Job, plan: Activation, report: ActivationReport, reason: str) -> None:
        if report.outcome == "rolled-back":
            await self._record_state(job)
            self._finish(job, Result.ROLLED_BACK, f"{reason}; the previous generation is back")
            return
        if report.outcome == "rollback-failed":
            await self._record_state(job)
            self._finish(job, Result.FAILED, f"{reason}; the rollback failed too")
            return
        if report.outcome == "not-changed":
            self._finish(job, Result.FAILED, f"{reason}; nothing was changed")
            return
        if plan.auto_rollback or plan.magic_rollback:
            await self._rollback(job, plan, reason, f"{reason}; {{}}")
            return
        remote = await self._login(job)
        await rc.decide(remote, plan.state_dir, "kept", reason)
        await self._record_state(job)
        self._finish(job, Result.FAILED, f"{reason}; kept as is (auto_rollback = false)")

    async def _rollback(self, job: _Job, plan: Activation, reason: str, template: str) -> None:
        """Roll back now through a fresh login; ``template`` gets what happened."""
        job.rolling_back = True
        self._stage(job, Stage.ROLLBACK, reason)
        try:
            remote = await self._login(job)
            report = await rc.rollback(remote, plan.state_dir, reason, time_limit=plan.activation_timeout + 60)
        except CrossnixError as exc:
            tail = "the target rolls back by itself" if plan.magic_rollback else "state unknown"
            self._finish(job, Result.FAILED, template.format(f"could not roll back ({exc.message}); {tail}"))
            return
        await self._record_state(job)
        if report.outcome == "rolled-back":
            self._finish(job, Result.ROLLED_BACK, template.format("the previous generation is back"))
        elif report.outcome == "confirmed":
            self.history.record(job.target.name, plan.toplevel)
            self._finish(job, Result.OK, template.format("it had been confirmed already"))
        else:
            self._finish(job, Result.FAILED, template.format(f"rollback outcome: {report.outcome or 'unknown'}"))

    async def _verify_and_confirm(self, job: _Job, plan: Activation) -> None:
        log = self._log(job)
        settings = job.settings
        self._stage(job, Stage.VERIFY, "fresh login: /run/current-system and the profile")
        try:
            fresh = await self._login(job)
            state = await rc.read_state(fresh)
        except CrossnixError as exc:
            reason = f"no fresh login after the activation ({exc.message})"
            if plan.magic_rollback:
                self._finish(job, Result.FAILED, f"{reason}; the target rolls back by itself")
            else:
                self._finish(job, Result.FAILED, reason)
            return
        problems = []
        if plan.goal in ("switch", "test") and state.current != plan.toplevel:
            problems.append(f"/run/current-system is {state.current or 'missing'}, not the new system")
        if plan.goal in ("switch", "boot") and state.profile != plan.toplevel:
            problems.append(f"the system profile points at {state.profile or 'nothing'}, not the new system")
        if not problems and settings.health_checks:
            window = int(health.budget(settings.health_checks)) + plan.confirm_timeout
            held = await rc.hold(fresh, plan.state_dir, window)
            if held.exit_status != 0:
                problems.append(f"the activation was settled meanwhile ({held.outcome})")
            else:
                log(f"running {len(settings.health_checks)} health check(s)")
                _, failures = await health.run_health_checks(
                    settings.health_checks, fresh, job.host or (job.target.host or ""), log
                )
                problems += failures
        if problems:
            for problem in problems:
                log(f"verification failed: {problem}")
            if plan.auto_rollback or plan.magic_rollback:
                await self._rollback(job, plan, f"verification failed: {problems[0]}", f"{problems[0]}; {{}}")
            else:
                await rc.decide(fresh, plan.state_dir, "kept", f"verification failed: {problems[0]}")
                await self._record_state(job)
                self._finish(job, Result.FAILED, f"{problems[0]}; kept as is (auto_rollback and magic_rollback off)")
            return
        self._stage(job, Stage.CONFIRM, "confirming through the fresh login")
        report = await rc.decide(fresh, plan.state_dir, "confirmed", "verified through a fresh login")
        if report.exit_status != 0 and report.outcome != "confirmed":
            await self._record_state(job)
            if report.outcome == "rolled-back":
                self._finish(job, Result.ROLLED_BACK, "confirmation came too late: the target had rolled back")
            else:
                self._finish(job, Result.FAILED, f"could not confirm (outcome {report.outcome or 'unknown'})")
            return
        self.history.record(job.target.name, plan.toplevel)
        job.report.generation = state.generation
        job.report.current_system = state.current or None
        self._finish(job, Result.OK)

    async def _record_state(self, job: _Job) -> None:
        """Read the generation the target ended up with (best effort, for the report)."""
        with contextlib.suppress(CrossnixError):
            remote = await self._login(job)
            state = await rc.read_state(remote)
            job.report.generation = state.generation
            job.report.current_system = state.current or None

    # Dry run -----------------------------------------------------------------------------------------------

    async def _plan(self, job: _Job, toplevel: str) -> None:
        state = job.state
        assert state is not None and job.work is not None
        self._stage(job, Stage.COPY, "planning the copy")
        missing = await self._missing_paths(job, toplevel)
        plan: dict[str, Any] = {
            "toplevel": toplevel,
            "build": "already built" if missing is not None else "would be built",
            "copy": {"paths": len(missing) if missing is not None else None, "missing": missing},
            "goal": job.goal,
            "profile": {"from": state.profile or None, "generation": state.generation},
            "current_system": state.current or None,
            "systemd": state.systemd,
            "magic_rollback": job.settings.magic_rollback,
            "auto_rollback": job.settings.auto_rollback,
            "health_checks": [health.describe(c) for c in job.settings.health_checks],
        }
        job.report.plan = plan
        unchanged = state.profile == toplevel and state.current == toplevel
        copy = "build the system and copy its closure" if missing is None else f"copy {len(missing)} path(s)"
        what = "already current" if unchanged else f"{job.goal} (generation {state.generation or 0} → new)"
        self._finish(job, Result.PLANNED, f"would {copy}, then {what}")

    async def _missing_paths(self, job: _Job, toplevel: str) -> list[str] | None:
        from crossnix_tasks import nix

        try:
            closure = [str(entry["path"]) for entry in await nix.path_info([toplevel], recursive=True)]
        except ProcessFailed:
            return None
        assert job.work is not None
        result = await job.work.run(["nix-store", "--check-validity", "--print-invalid", *closure], check=False)
        return [line for line in result.stdout.splitlines() if line.startswith("/")]

    # Build -------------------------------------------------------------------------------------------------

    async def _build_all(self) -> SystemsBuilt:
        def log(line: str) -> None:
            self.sink.line(BUILD_JOB, Stage.BUILD, line)

        started = time.monotonic()
        self.sink.stage(BUILD_JOB, Stage.BUILD, f"evaluating and building {len(self.targets)} system(s)")
        try:
            systems = await self._build_fn(self.targets, log)
        except asyncio.CancelledError:
            self.sink.result(BUILD_JOB, Stage.BUILD, Result.INTERRUPTED)
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, CrossnixError) else repr(exc)
            for line in message.splitlines():
                log(line)
            self.sink.result(BUILD_JOB, Stage.BUILD, Result.FAILED, message.splitlines()[0])
            where = f" (see {self.sink.log_for(BUILD_JOB).path})" if self.sink.log_dir else ""
            self.notes.append(f"build failed: {message.splitlines()[0]}{where}")
            raise
        toplevels = systems.toplevels
        if self._sign_fn is not None and toplevels and not self.options.dry_run:
            self._sign_task = asyncio.create_task(self._sign(list(toplevels.values())))
        took = time.monotonic() - started
        failed = f", {len(systems.failures)} failed" if systems.failures else ""
        result = Result.FAILED if systems.failures else Result.OK
        self.sink.result(BUILD_JOB, Stage.BUILD, result, f"{len(toplevels)} system(s) in {took:.1f}s{failed}")
        return systems

    async def _sign(self, paths: Sequence[str]) -> None:
        assert self._sign_fn is not None
        self.sink.line(BUILD_JOB, Stage.BUILD, f"signing {len(set(paths))} closure(s) with the fleet key")
        await self._sign_fn(sorted(set(paths)))


async def nix_copy(request: CopyRequest, log: Callable[[str], None]) -> None:
    """The default copier: ``nix copy --to ssh-ng://<host>`` with ``NIX_SSHOPTS=-F <generated ssh_config>``."""
    from crossnix_tasks import nix, nixlog

    def on_event(event: nixlog.NixEvent) -> None:
        if isinstance(event, nixlog.Start | nixlog.Message | nixlog.RawLine) and event.text.strip():
            log(event.text)

    try:
        await nix.copy(
            [request.toplevel],
            to=ssh.store_uri(request.target),
            substitute_on_destination=request.substitute_on_destination,
            no_check_sigs=request.no_check_sigs,
            ssh_opts=ssh.nix_sshopts(request.ssh_config),
            on_event=on_event,
        )
    except ProcessFailed as exc:
        if "lacks a valid signature" in exc.message:
            raise CrossnixError(
                f"copy refused: {exc.message.splitlines()[-1].strip()}",
                hint="the target does not trust crossnix's fleet signing key yet: deploy once as root, or add "
                "the key in .crossnix/keys/fleet-signing.pub to nix.settings.trusted-public-keys on the target",
            ) from None
        raise
