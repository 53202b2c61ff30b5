"""``relay``: run a task's pipeline, one step, or talk to the served model.

Every command calls the same step functions as the Airflow DAG and ``dvc.yaml``.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from components.errors import RelayError
from components.spec import load_spec, parse_run_params, run_param_schemas
from pipelines.steps import STEPS, gate_failure, gate_passed, latest_run, run_step, start_run

if TYPE_CHECKING:
    from components.settings import Settings

app = typer.Typer(help="Relay: versioned data to a served, promoted model.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
serve_app = typer.Typer(help="Control the local model servers (the V2 server, TorchServe).", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
task_app = typer.Typer(help="Create tasks from your own data.", no_args_is_help=True)
app.add_typer(task_app, name="task")
data_app = typer.Typer(help="Add data to a task's dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# soft_wrap: without a terminal rich wraps at 80 columns, which breaks a printed path or command in two
# (a copied command then fails); lines go out whole and the terminal wraps them, if it must.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)



def with_run_params(command=None, *, exclude: tuple[str, ...] = ()):
    """Give a command one ``--option`` per run parameter (components.spec.OVERRIDABLE) but ``exclude``, typed,
    bounded and described from the spec field it overrides; the command receives the given ones as
    ``overrides``."""
    if command is None:
        return lambda command: with_run_params(command, exclude=exclude)
    schemas = {name: schema for name, schema in run_param_schemas().items() if name not in exclude}
    python_type = {"integer": int, "number": float, "string": str}
    extra = []
    for name, schema in schemas.items():
        kind = python_type[schema["type"]]
        if "enum" in schema:
            kind = enum.Enum(f"{name}_choice", {value: value for value in schema["enum"]}, type=str)
        # Inclusive bounds become click ranges; the spec model checks the rest when the run starts.
        bounds = {"min": schema.get("minimum"), "max": schema.get("maximum")}
        option = typer.Option(help=schema["description"],
                              rich_help_panel="Run parameters", **(bounds if kind in (int, float) else {}))
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=Annotated[Optional[kind], option]))
    own = inspect.signature(command, eval_str=True)

    def wrapper(**kwargs):
        given = {name: kwargs.pop(name) for name in schemas}
        overrides = {name: getattr(value, "value", value) for name, value in given.items() if value is not None}
        return command(**kwargs, overrides=overrides)

    kept = [param for param in own.parameters.values() if param.name != "overrides"]
    wrapper.__signature__ = own.replace(parameters=kept + extra)
    wrapper.__name__, wrapper.__doc__ = command.__name__, command.__doc__
    return wrapper


def _fail(error: Exception | str) -> None:
    err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _quiet_libraries() -> None:
    for name in ("torch.onnx", "great_expectations", "dvc", "gto", "dvclive"):
        logging.getLogger(name).setLevel(logging.ERROR)


@app.command()
@with_run_params
def run(task: Annotated[str, typer.Argument(help="Task name (pipelines/specs/NAME.yaml) or a spec path.")],
        overrides: dict) -> None:
    """Run the whole pipeline for TASK without Airflow: data → … → deploy."""
    _quiet_libraries()
    try:
        run_dir = start_run(task, overrides)
        console.print(f"run directory: {run_dir}")
        for step in STEPS:
            console.rule(f"[bold]{step}")
            summary = run_step(step, run_dir)
            console.print_json(json.dumps(summary))
            if step == "gate" and not summary["passed"]:
                err.print(gate_failure(run_dir), highlight=False)
                raise typer.Exit(1)
            if step == "deploy" and summary.get("rolled_back"):
                err.print(f"[bold red]rolled back[/]: {summary['why']}", highlight=False)
                raise typer.Exit(1)
    except RelayError as error:
        _fail(error)


@app.command()
@with_run_params
def step(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STEPS)}.")],
         task: Annotated[Optional[str], typer.Option(help="Task name; `data` starts a new run of it.")] = None,
         run_dir: Annotated[Optional[Path], typer.Option(help="Run directory (default: the task's latest run).")] = None,
         run_uri: Annotated[Optional[str], typer.Option(help="Run addressed by URI (s3://…, file://…): "
                                                             "downloaded, stepped, uploaded.")] = None,
         params: Annotated[Optional[str], typer.Option(
             help='All run parameters as one JSON object, e.g. \'{"epochs": 3}\' (what Kubernetes pods '
                  'receive); the options below override it.')] = None,
         overrides: dict | None = None) -> None:
    """Run one step. `data --task T` starts a run (in --run-dir if given); later steps use --run-dir or T's latest run.

    Run parameters apply when `data` starts a run; later steps read them from the run's spec.json.
    """
    _quiet_libraries()
    try:
        overrides = {**(parse_run_params(params) if params else {}), **(overrides or {})}
        if run_uri is None:
            code = _step(name, task, run_dir, overrides)
        else:
            from components.settings import get_settings
            from pipelines.run_store import local_run, settings_for_run

            settings = settings_for_run(run_uri, get_settings())
            with local_run(run_uri, settings) as local:  # a failed gate's report is uploaded too
                code = _step(name, task, local, overrides, settings)
    except RelayError as error:
        _fail(error)
    if code:
        raise typer.Exit(code)


def _step(name: str, task: str | None, run_dir: Path | None, overrides: dict,
          settings: Settings | None = None) -> int:
    """Run one step (with ``settings``, else the environment's); return the exit code (1: the gate failed)."""
    if name == "data" and task is not None:
        run_dir = start_run(task, overrides, settings=settings, run_dir=run_dir)
    elif run_dir is None:
        if task is None:
            raise RelayError("give --task (or --run-dir)")
        run_dir = latest_run(load_spec(task).name, settings)
    summary = run_step(name, run_dir, settings)
    console.print_json(json.dumps({"run_dir": str(run_dir), **summary}))
    if name == "gate" and not gate_passed(run_dir):
        err.print(gate_failure(run_dir), highlight=False)
        return 1
    return 0


@app.command()
def predict(path: Annotated[Path, typer.Argument(help="An image file.", exists=True, dir_okay=False)],
            task: Annotated[Optional[str], typer.Option(
                help="The served task (default: the only task the local servers serve).")] = None,
            version: Annotated[Optional[str], typer.Option(help="A served version, v0.2.0 or 0.2.0 "
                                                                "(default: the default one).")] = None
            ) -> None:
    """Print the class the served model returns for PATH."""
    from components.deploy.local import only_served_task, served_by
    from components.settings import get_settings

    try:
        settings = get_settings()
        task = task or only_served_task(settings)
        result = served_by(settings, task).predict(task, path.read_bytes(), version)
    except RelayError as error:
        _fail(f"{path}: {error}")
    console.print(f"{path}: class [bold]{result['class']}[/] (p={result['probability']:.3f})", highlight=False)


@app.command()
def models(task: Annotated[str, typer.Argument(help="Task name.")]) -> None:
    """List TASK's registered versions: stage, gate result and where each is served."""
    from components.registry import model_version
    from components.deploy.local import served_by
    from components.registry.model_registry import ModelRegistry

    registry = ModelRegistry()
    versions = registry.versions(task)
    if not versions:
        console.print(f"no registered versions of {task} in {registry.path}")
        return
    server, served, default = served_by(registry.settings, task), set(), None
    if server.pid():
        served = {model_version.canonical(served_version) for served_version in server.versions(task)}
        default = server.default_version(task)
        default = default and model_version.canonical(default)
    console.print(f"{task} in {registry.path}", highlight=False)
    table = Table()
    for column in ("version", "framework", "stages", "gate", "accuracy", "served"):
        table.add_column(column, no_wrap=True)
    urls = []
    for row in versions:
        version = row["version"]
        gate = registry.gate(task, version)
        where = ""
        if version in served:
            where = "default" if default == version else "yes"
            urls.append(f"  {version}: {server.predictions_url(task, version)}"
                        + (f" (default: {server.predictions_url(task)})" if default == version else ""))
        table.add_row(version, registry.model_info(task, version).get("framework", "?"), ", ".join(row["stages"]),
                      "pass" if gate["passed"] else "FAIL",
                      f"{gate['metrics']['accuracy_optimized']:.4f}", where)
    console.print(table)
    # URLs below the table, whole: a table cell would cut or fold them at the terminal's width.
    for line in urls:
        console.print(line, highlight=False)
    remote = registry.dvc_remote()
    if remote and "://" not in remote:
        console.print(f"DVC remote {remote} is a local path: it is valid only on this machine, so pods and other "
                      "machines cannot fetch these models from a clone of the registry. Set RELAY_DVC_REMOTE to a "
                      "shared URL (s3://…) for them, or pass `relay fetch-model --dvc-remote`.", highlight=False)
    elif remote:
        console.print(f"DVC remote: {remote}", highlight=False)


@app.command()
@with_run_params(exclude=("framework", "model"))
def bakeoff(task: Annotated[str, typer.Argument(help="Task name (pipelines/specs/NAME.yaml) or a spec path.")],
            overrides: dict,
            models: Annotated[Optional[str], typer.Option(
                help="Architectures to compare, comma-separated (small_cnn, resnet, mobilenet_v2); default: the "
                     "spec's bakeoff.models, else its model.")] = None,
            ship: Annotated[bool, typer.Option(help="Register and deploy the recommended candidate through the "
                                                    "normal gate, register and deploy steps.")] = False,
            open_it: Annotated[bool, typer.Option("--open", help="Open the report in the browser.")] = False) -> None:
    """Train TASK in PyTorch and in TensorFlow (same split, epochs, seed, augmentation, precision), measure
    accuracy, training, conversion, inference and serving, and recommend one by the spec's priorities."""
    from pipelines.bakeoff import run_bakeoff

    _quiet_libraries()
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    try:
        result = run_bakeoff(task, chosen, overrides, ship=ship, log=lambda line: console.print(line, highlight=False))
    except RelayError as error:
        _fail(error)
    console.print(Markdown(result.summary))
    typer.echo(f"Report: {result.report}")  # unwrapped, whatever the terminal's width: scripts read it
    if open_it:
        import webbrowser

        webbrowser.open(result.report.as_uri())
    shipped = result.document.get("shipped")
    if ship and not (shipped and shipped.get("shipped")):
        raise typer.Exit(1)


@app.command()
def report(task: Annotated[str, typer.Argument(help="Task name.")],
           version: Annotated[Optional[str], typer.Option(help="A registered version (default: the newest).")] = None,
           open_it: Annotated[bool, typer.Option("--open", help="Open it in the browser.")] = False) -> None:
    """Write the lineage card of TASK's version (data, code, spec, curves, gate, serving, stages); print its path."""
    from components.deploy.lineage import current_card

    try:
        path = current_card(task, version)
    except RelayError as error:
        _fail(error)
    typer.echo(str(path))  # unwrapped, whatever the terminal's width: scripts read it
    if open_it:
        import webbrowser

        webbrowser.open(path.as_uri())


@app.command("dag-test")
def dag_test(task: Annotated[str, typer.Argument(help="Task name.")],
             conf: Annotated[str, typer.Option(help='Run params as JSON, e.g. \'{"epochs": 5}\'.')] = "{}") -> None:
    """Run the task's Airflow DAG once, for real, with dag.test(); fail unless the run succeeds."""
    from pipelines.airflow_local import run_dag_test

    try:
        dag_id, state, tasks = run_dag_test(task, json.loads(conf))
    except (RelayError, json.JSONDecodeError) as error:
        _fail(error)
    table = Table(title=f"{dag_id}: {state}")
    table.add_column("task")
    table.add_column("state")
    for task_id in sorted(tasks, key=lambda name: STEPS.index(name) if name in STEPS else -1):  # on_time first
        table.add_row(task_id, tasks[task_id])
    console.print(table)
    if state != "success":
        raise typer.Exit(1)


@app.command()
def promote(task: Annotated[str, typer.Argument(help="Task name.")],
            version: Annotated[str, typer.Option(help="Registered version, e.g. v0.2.0.")],
            to: Annotated[str, typer.Option("--to", help="staging | production.")]) -> None:
    """Promote a registered version: GTO stage tag + a GitOps commit pinning it in the env's overlay."""
    from components.gitops.promote import promote as promote_version

    try:
        result = promote_version(task, version, to)
    except RelayError as error:
        _fail(error)
    console.print(f"{task} {result.version} → {to} (was {result.previous or 'nothing'}): commit {result.commit[:10]} "
                  f"pins {result.overlay}. {result.live}", highlight=False)


@app.command()
def rollback(task: Annotated[str, typer.Argument(help="Task name.")],
             env: Annotated[str, typer.Option(help="staging | production.")] = "production") -> None:
    """Pin the version the environment ran before, with a new GitOps commit."""
    from components.gitops.promote import rollback as rollback_env

    try:
        result = rollback_env(task, env)
    except RelayError as error:
        _fail(error)
    console.print(f"{task} in {env}: {result.previous} → {result.version}, commit {result.commit[:10]}. "
                  f"{result.live}", highlight=False)


@app.command("fetch-model")
def fetch_model(task: Annotated[str, typer.Argument(help="Task name.")],
                version: Annotated[str, typer.Option(help="Registered version, e.g. v0.2.0.")],
                registry: Annotated[str, typer.Option(help="Registry git URL or path.")],
                to: Annotated[Path, typer.Option("--to", help="Destination folder.")],
                tfserving: Annotated[bool, typer.Option(help="Fetch the TF Serving base path instead of the .mar.")]
                = False,
                v2: Annotated[bool, typer.Option(help="Make the .mar into the V2 server's repository (TO/repository) "
                                                      "serving this version.")] = False,
                dvc_remote: Annotated[Optional[str], typer.Option(
                    envvar="RELAY_DVC_REMOTE", show_envvar=True,
                    help="DVC remote URL to fetch from instead of the one committed in the registry "
                         "(a pod's own endpoint; credentials come from the environment).")] = None) -> None:
    """Fetch a version's serving artifacts through DVC (what the serving pods' initContainers run)."""
    from components.deploy.fetch import fetch_model as fetch
    from components.settings import get_settings

    try:  # the endpoint, if set (RELAY_S3_ENDPOINT_URL, AWS_ENDPOINT_URL_S3), is the pod's own
        paths = fetch(registry, task, version, to, tfserving, dvc_remote or None, get_settings().s3_endpoint_url,
                      v2=v2)
    except RelayError as error:
        _fail(error)
    console.print("\n".join(str(path) for path in paths))


@serve_app.command("start")
def serve_start() -> None:
    """Start the local model servers (127.0.0.1, token auth on) and serve what was served before they stopped:
    the V2 server (the default), and TorchServe for tasks whose deploy.server is torchserve."""
    from components.deploy.local import start_serving
    from components.settings import get_settings

    try:
        servers, restored = start_serving(get_settings())
    except RelayError as error:
        _fail(error)
    for server in servers.values():
        console.print(f"{server.endpoints()} (pid {server.pid()})", highlight=False)
    for task, note in restored.items():
        console.print(f"  {task}: {note}", highlight=False)


def _server_kind(settings) -> str:
    """The server ``relay serve key`` speaks of by default: the one that serves every served task, else the
    default server."""
    from components.deploy.local import served_state
    from components.deploy.servers import DEFAULT_SERVER

    kinds = {entry["server"] for entry in served_state(settings).values()}
    return kinds.pop() if len(kinds) == 1 else DEFAULT_SERVER


@serve_app.command("key")
def serve_key(kind: Annotated[str, typer.Option(help="TorchServe's inference or management key.")] = "inference",
              server: Annotated[Optional[str], typer.Option(
                  help="torchserve or kserve (default: the one serving the local tasks).")] = None) -> None:
    """Print a valid key of the local server: TorchServe's, renewed when it has expired (keys live
    RELAY_TS_TOKEN_EXPIRATION_MIN minutes), or the V2 server's token. For clients:
    curl -H "Authorization: Bearer $(relay serve key)" ..."""
    from components.deploy.servers import model_server
    from components.settings import get_settings

    if kind not in ("inference", "management"):
        _fail(f"--kind {kind!r}: use inference or management")
    try:
        settings = get_settings()
        chosen = model_server(server or _server_kind(settings), settings)
        typer.echo(chosen.valid_key(kind))
    except RelayError as error:
        _fail(error)


@serve_app.command("stop")
def serve_stop() -> None:
    """Stop the local model servers started by Relay."""
    from components.deploy.servers import stop_servers

    stopped = stop_servers()
    console.print(f"{' and '.join(stopped)} stopped" if stopped else "no Relay model server is running")


@serve_app.command("status")
def serve_status() -> None:
    """Say whether the local model servers run, and what they serve."""
    from components.registry import model_version
    from components.deploy.local import served_state
    from components.deploy.servers import DEFAULT_SERVER, NAMES, SERVERS, model_server
    from components.settings import get_settings

    settings = get_settings()
    state = served_state(settings)
    for kind in SERVERS:
        server = model_server(kind, settings)
        pid = server.pid()
        tasks = {task: entry for task, entry in state.items() if entry["server"] == kind}
        if not pid and not tasks and kind != DEFAULT_SERVER:
            continue  # a server nothing was ever deployed to
        name = NAMES[kind]
        console.print(f"{name[0].upper() + name[1:]}: {'running, pid ' + str(pid) if pid else 'not running'} "
                      f"({server.dir})", highlight=False)
        for task, entry in tasks.items():
            if pid:
                live = [model_version.canonical(v) for v in server.versions(task)]
                default = server.default_version(task)
                console.print(f"  {task}: serving {', '.join(live) or 'nothing'}; default "
                              f"{model_version.canonical(default) if default else 'none'} "
                              f"({server.predictions_url(task)})", highlight=False)
            else:
                others = entry["versions"][1:]
                also = f", also {', '.join(others)}" if others else ""
                console.print(f"  {task}: default {entry['default']}{also}; `relay serve start` serves "
                              f"{'them' if others else 'it'} again", highlight=False)


@task_app.command("new")
def task_new(name: Annotated[str, typer.Argument(help="The new task's name (lower case, digits, - and _).")],
             source: Annotated[Path, typer.Option("--from", help="The image folder: DIR/<label>/<images>.",
                                                  exists=True, file_okay=False)],
             labels_csv: Annotated[Optional[str], typer.Option(
                 help="A CSV inside DIR with columns path,label, instead of label folders.")] = None) -> None:
    """Scan DIR, copy it to data/NAME under DVC (pushed), and write pipelines/specs/NAME.yaml."""
    from components.data.task_new import create_task, scan, summarize

    _quiet_libraries()
    try:
        found = scan(source, labels_csv)
        console.print(f"{source}: {summarize(found)}", highlight=False)
        table = Table()
        table.add_column("class")
        table.add_column("images", justify="right")
        for label in found.classes:
            table.add_row(label, str(found.counts[label]))
        console.print(table)
        console.print("modes: " + ", ".join(f"{m} {n}" for m, n in found.modes.most_common()))
        for reason, paths in found.found.ignored.items():
            console.print(f"ignored ({reason}): {len(paths)}, e.g. {', '.join(paths[:3])}")
        for rel, why in sorted(found.unreadable.items())[:10]:
            console.print(f"[yellow]unreadable[/]: {rel}: {why}", highlight=False)
        spec_file = create_task(name, source, labels_csv, found=found)
    except RelayError as error:
        _fail(error)
    console.print(f"wrote {spec_file} and data/{name}.dvc (data pushed to the DVC remote)")
    from components.settings import get_settings

    console.print(f"commit them: git add {spec_file.relative_to(get_settings().project_dir)} data/{name}.dvc "
                  f"data/.gitignore && git commit -m 'Add task {name}'", highlight=False)
    console.print(f"next: [bold]relay run {name}[/]  (or trigger relay_{name} in Airflow)")


@data_app.command("add")
def data_add(task: Annotated[str, typer.Argument(help="Task name.")],
             source: Annotated[Path, typer.Argument(help="New images: DIR/<label>/<images>, labels among the "
                                                         "task's classes.", exists=True, file_okay=False)],
             commit: Annotated[bool, typer.Option(help="Commit the new data/TASK.dvc pointer to the project "
                                                       "(--no-commit: print the commit to make).")] = True,
             notify: Annotated[bool, typer.Option(help="Send Airflow an event for the task's dataset Asset, so "
                                                       "that relay_TASK retrains (RELAY_AIRFLOW_URL).")] = True
             ) -> None:
    """Add images to TASK's dataset: copy, `dvc add`, `dvc push`, commit the pointer, tell Airflow."""
    from components.data.add import add_data, commit_command
    from components.settings import get_settings
    from pipelines.airflow_api import AirflowClient, dataset_asset_uri

    _quiet_libraries()
    settings = get_settings()
    try:
        result = add_data(task, source, commit, settings)
    except RelayError as error:
        _fail(error)
    console.print(f"{result.task}: {result.added} image(s) added, {result.already_present} already there; dataset "
                  f"version {result.dataset_md5} pushed to the DVC remote", highlight=False)
    if result.commit:
        console.print(f"committed {result.pointer.name}: {result.commit[:10]}", highlight=False)
    elif result.added:
        console.print(f"commit it: {commit_command(result, settings.project_dir)}", highlight=False)
    if not notify:
        return
    uri = dataset_asset_uri(result.task)
    try:
        AirflowClient.from_settings(settings).emit_asset_event(
            uri, {"dataset_md5": result.dataset_md5, "added": result.added, "commit": result.commit})
    except RelayError as error:
        _fail(f"the data was added, but Airflow was not told: {error}. Trigger relay_{result.task} yourself, or "
              f"rerun with Airflow up (the add is idempotent)")
    console.print(f"Airflow: asset event for {uri} sent to {settings.airflow_url}; relay_{result.task} retrains",
                  highlight=False)


@app.command()
def init(path: Annotated[Path, typer.Argument(help="The new project's directory (new, or empty).")]) -> None:
    """Create a team's Relay project: a git repo with DVC, specs/, data/, dags/ (Relay's DAG factory), a README."""
    from components.project import init_project
    from components.settings import relay_version

    try:
        made = init_project(path, relay_version())
    except RelayError as error:
        _fail(error)
    console.print(f"created the Relay project {made.path} (Relay {relay_version()}):", highlight=False)
    for file in made.files:
        console.print(f"  {file.relative_to(made.path)}", highlight=False)
    console.print(f"next: cd {made.path} && relay task new NAME --from DIR  (then `relay run NAME`); commit "
                  "with git when you are ready", highlight=False)


@app.command()
def airflow(executor: Annotated[str, typer.Option(
                help="local: LocalExecutor, tasks in this machine's RELAY_HOME. celery: CeleryExecutor with a Redis "
                     "broker and Celery workers that share no disk (needs RELAY_RUNS_URI, RELAY_DVC_REMOTE and "
                     "RELAY_REGISTRY_REMOTE).")] = "local",
            workers: Annotated[int, typer.Option(min=1, help="Celery workers to start (celery only).")] = 2) -> None:
    """Start Airflow's servers on 127.0.0.1 with this project's DAGs and trigger forms, in the foreground
    (RELAY_AIRFLOW_PORT, default 8480). Ctrl-C stops them."""
    import os

    from components.settings import PROJECT_DIR, get_settings, is_source_checkout

    if executor not in ("local", "celery"):
        _fail(f"--executor {executor}: use local or celery")
    settings = get_settings()
    script = Path(__file__).with_name("airflow-servers.sh")
    env = {**os.environ, "RELAY_PYTHON": sys.executable, "RELAY_DAGS_FOLDER": str(settings.dags_dir),
           "RELAY_PROJECT_DIR": str(settings.project_dir), "RELAY_AIRFLOW_EXECUTOR": executor,
           # installed software, as the interpreter is: the Celery workers' copies of the project lack it
           "RELAY_TFX_ENV": str(settings.tfx_env), "RELAY_SERVE_ENV": str(settings.serve_env),
           "RELAY_CELERY_WORKERS": str(workers)}
    if is_source_checkout():
        env["RELAY_PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))
    os.execve("/bin/bash", ["bash", str(script)], env)  # the script owns the terminal's signals from here


def main() -> None:
    app(prog_name="relay")


if __name__ == "__main__":
    sys.exit(main())
