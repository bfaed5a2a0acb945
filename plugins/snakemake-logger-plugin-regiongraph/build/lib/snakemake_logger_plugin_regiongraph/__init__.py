"""The regiongraph workflow's Snakemake logger plugin.

Snakemake loads every installed ``snakemake_logger_plugin_*`` package when its command line
starts, before it reads the ``--configfile`` files. This one uses that moment for one thing
Snakemake's CLI gets wrong: a missing ``--configfile`` ends in a Python traceback, and a YAML
syntax error says "Config file is not valid JSON or YAML" without naming the file or the line.
:func:`install_config_file_errors` wraps Snakemake's config file loader so that both stop with
one line naming the file (and line and column)::

    WorkflowError:
    my-ssv1.yaml:12:3: not valid YAML: mapping values are not allowed here

Anything else the loader does is untouched: a file that loads is loaded by Snakemake's own code.

Selected with ``--logger regiongraph``, the plugin's :class:`LogHandler` also prints a one-line
notice on stderr the moment a job fails (rule, log file, the error's last line), on top of
Snakemake's own console output; without it, the workflow's ``onerror`` report at the end of the
run says the same for every failed job.

Install it beside Snakemake, not in editable mode (Snakemake does not find editable plugins):
``pip install ./plugins/snakemake-logger-plugin-regiongraph`` (``make setup`` does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

__all__ = ["LogHandler", "install_config_file_errors", "yaml_error_location"]


def yaml_error_location(path: Path) -> str | None:
    """``path:line:column: not valid YAML: problem`` for a file that does not parse, else None."""
    try:
        yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"{where}: not valid YAML: {problem}"
    return None


def install_config_file_errors() -> None:
    """Wrap ``snakemake.common.configfile._load_configfile`` (once) so that a missing or
    unparsable config file is a one-line ``WorkflowError`` naming it."""
    from snakemake.common import configfile

    original = configfile._load_configfile
    if getattr(original, "regiongraph", False):
        return

    def load(configpath_or_obj, filetype="Config"):
        try:
            return original(configpath_or_obj, filetype)
        except (FileNotFoundError, IsADirectoryError, WorkflowError) as error:
            if not isinstance(configpath_or_obj, str | Path):
                raise
            path = Path(configpath_or_obj)
            if not path.is_file():
                message = f"{path}: {filetype.lower()} file not found"
            else:
                message = yaml_error_location(path)
                if message is None:
                    raise
            # keep Snakemake's own traceback: its console shows only frames outside Snakemake,
            # and there are none, so the message is all that is printed
            raise WorkflowError(message).with_traceback(error.__traceback__) from None

    load.regiongraph = True
    configfile._load_configfile = load


install_config_file_errors()


class LogHandler(LogHandlerBase):
    """``--logger regiongraph``: one line on stderr as soon as a job fails."""

    def emit(self, record) -> None:
        if getattr(record, "event", None) != LogEvent.JOB_ERROR:
            return
        logs = [str(path) for path in getattr(record, "log", None) or []]
        line = f"regiongraph: rule {getattr(record, 'rule_name', '?')} failed"
        if logs:
            line += f"; log {logs[0]}"
            last = _last_error_line(logs[0])
            if last:
                line += f": {last}"
        print(line, file=sys.stderr, flush=True)

    @property
    def writes_to_stream(self) -> bool:
        return False  # adds to Snakemake's console, does not replace it

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False


def _last_error_line(log_path: str) -> str:
    """The last meaningful line of a job log (regiongraph's reading when it is installed)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    try:
        from regiongraph.console import meaningful_tail
    except ImportError:
        rows = [row for row in text.splitlines() if row.strip()]
        return rows[-1] if rows else ""
    tail = meaningful_tail(text, lines=1)
    return tail[-1] if tail else ""
