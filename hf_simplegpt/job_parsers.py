"""Every job's `--help` at once, from its parser stored as data.

A job's help is its own parser's, and building that parser imports what the job's flags are made of: torch,
transformers' `TrainingArguments` (which loads peft, and through it torchao), TRL's configs, sentence-transformers.
That took 5-7 s on 2 idle cores. `job_parsers.json`, in the package, holds each job's parser as data: its actions
(option strings, nargs, metavar, help already expanded with its default) in their order and groups, recorded with
the versions of the libraries its flags come from (`flag_sources`: transformers, TRL, ...). Where exactly those
versions are installed, `hf-simplegpt <job> --help` rebuilds the parser from that data and lets argparse lay it out
for the terminal, as the job's own parser would; elsewhere the job's parser draws it (`cli.render_job_help`). The help
does not depend on the machine: jobs show their fields' own defaults there, and say how the hardware changes them
(`training.parse_args`).

    python -m hf_simplegpt.job_parsers   # rewrite job_parsers.json after changing a job's flags (tests/test_cli.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
from importlib import metadata
from pathlib import Path

STORED = Path(__file__).with_name("job_parsers.json")


def flag_sources(parser: argparse.ArgumentParser) -> list[str]:
    """The distributions a job's flags, help and defaults come from: those that define the dataclasses of its
    HfArgumentParser (TrainingArguments is transformers', SFTConfig trl's, the contrastive job's arguments
    sentence-transformers'), and transformers for every job, the library the jobs are built on."""
    modules = {cls.__module__.split(".")[0] for t in getattr(parser, "dataclass_types", []) for cls in t.__mro__}
    distributions = metadata.packages_distributions()
    names = {"transformers"} | {d for m in modules for d in distributions.get(m, [])}
    return sorted(names - {"hf-simplegpt", "hf_simplegpt"})


def installed_versions(names: list[str]) -> dict[str, str | None]:
    """The installed version of each distribution, without a local label (a CUDA build of torch has the CPU build's
    flags); None where it is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name).split("+")[0]
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class _Listed(argparse.Action):
    """An action rebuilt only to be shown: its usage part is the original's (e.g. `--flag | --no-flag`)."""

    def __init__(self, *args, usage_part: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.usage_part = usage_part

    def format_usage(self) -> str:
        return self.usage_part or super().format_usage()

    def __call__(self, parser, namespace, values, option_string=None):
        raise NotImplementedError("a parser rebuilt from job_parsers.json only prints help")


def describe_action(action: argparse.Action, formatter: argparse.HelpFormatter) -> dict:
    """What the help shows of one action, as JSON: the help string expanded as the job's formatter expands it
    (`%(default)s`, ArgumentDefaultsHelpFormatter's "(default: ...)")."""
    if isinstance(action, argparse._SubParsersAction):
        raise TypeError(f"job parsers have no subcommands; {action.dest!r} is one")
    shown = action.help
    if shown and shown != argparse.SUPPRESS and shown.strip():
        shown = formatter._expand_help(action)
    return {
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "nargs": action.nargs,
        "metavar": list(action.metavar) if isinstance(action.metavar, tuple) else action.metavar,
        "choices": None if action.choices is None else [str(choice) for choice in action.choices],
        "required": action.required,
        "help": shown,
        "usage_part": action.format_usage() if action.nargs == 0 and action.option_strings else None,
    }


def describe_parser(parser: argparse.ArgumentParser) -> dict:
    """A parser as JSON: the text around the flags, and each action in order with its group and exclusive group."""
    formatter_class = parser.formatter_class
    if getattr(argparse, formatter_class.__name__, None) is not formatter_class:
        raise TypeError(f"{parser.prog}: store only argparse's own formatters, not {formatter_class!r}")
    formatter = parser._get_formatter()
    group_of = {id(a): i for i, group in enumerate(parser._action_groups) for a in group._group_actions}
    exclusive_of = {id(a): i for i, group in enumerate(parser._mutually_exclusive_groups) for a in group._group_actions}
    return {
        "prog": parser.prog,
        "usage": parser.usage,
        "description": parser.description,
        "epilog": parser.epilog,
        "formatter_class": formatter_class.__name__,
        "prefix_chars": parser.prefix_chars,
        "groups": [[group.title, group.description] for group in parser._action_groups],
        "exclusive_groups": [  # added to an argument group, or (None) to the parser itself
            [None if group._container is parser else parser._action_groups.index(group._container), group.required]
            for group in parser._mutually_exclusive_groups
        ],
        "actions": [
            [describe_action(action, formatter), group_of[id(action)], exclusive_of.get(id(action))]
            for action in parser._actions
        ],
    }


def rebuild_parser(stored: dict) -> argparse.ArgumentParser:
    """The parser `describe_parser` stored, for its help: argparse lays it out for this terminal."""
    base = getattr(argparse, stored["formatter_class"])

    class StoredHelp(base):
        def _expand_help(self, action):  # expanded when stored
            return action.help

    parser = argparse.ArgumentParser(
        prog=stored["prog"],
        usage=stored["usage"],
        description=stored["description"],
        epilog=stored["epilog"],
        formatter_class=StoredHelp,
        prefix_chars=stored["prefix_chars"],
        add_help=False,
    )
    groups = [parser._positionals, parser._optionals]
    for group, (title, description) in zip(groups, stored["groups"][:2]):
        group.title, group.description = title, description
    groups += [parser.add_argument_group(title, description) for title, description in stored["groups"][2:]]
    exclusive = [
        (parser if at is None else groups[at]).add_mutually_exclusive_group(required=required)
        for at, required in stored["exclusive_groups"]
    ]
    for action, group_at, exclusive_at in stored["actions"]:
        container = groups[group_at] if exclusive_at is None else exclusive[exclusive_at]
        kwargs = {k: v for k, v in action.items() if k != "option_strings"}
        if isinstance(kwargs["metavar"], list):
            kwargs["metavar"] = tuple(kwargs["metavar"])
        if not action["option_strings"]:  # a positional: argparse derives `required` from nargs
            del kwargs["required"], kwargs["dest"]
            container.add_argument(action["dest"], action=_Listed, **kwargs)
        else:
            container.add_argument(*action["option_strings"], action=_Listed, **kwargs)
    return parser


def stored_help(name: str) -> str | None:
    """`hf-simplegpt <name> --help` from job_parsers.json, or None when it was recorded with other versions of the
    libraries its flags come from (`flag_sources`)."""
    with contextlib.suppress(OSError):
        with STORED.open(encoding="utf-8") as f:
            stored = json.load(f)
        parser = stored["jobs"].get(name)
        if parser and parser["versions"] == installed_versions(list(parser["versions"])):
            actions = stored["actions"]
            parser = {**parser, "actions": [[actions[i], *where] for i, *where in parser["actions"]]}
            return rebuild_parser(parser).format_help()
    return None


@contextlib.contextmanager
def recording_parsers(parsers: list):
    """Collect the parsers that print their help while this is active."""
    print_help = argparse.ArgumentParser.print_help

    def record(parser, file=None):
        parsers.append(parser)
        print_help(parser, file)

    argparse.ArgumentParser.print_help = record
    try:
        yield parsers
    finally:
        argparse.ArgumentParser.print_help = print_help


def describe_jobs() -> dict:
    """Every job's parser (`describe_parser`), with the actions the jobs share stored once."""
    from .cli import JOBS, render_job_help

    table: dict[str, int] = {}
    jobs = {}
    for name, job in JOBS.items():
        with recording_parsers([]) as parsers:
            render_job_help(name, job)
        stored = describe_parser(parsers[-1])
        for entry in stored["actions"]:
            key = json.dumps(entry[0], sort_keys=True)
            entry[0] = table.setdefault(key, len(table))
        jobs[name] = {**stored, "versions": installed_versions(flag_sources(parsers[-1]))}
    return {
        "written_by": "python -m hf_simplegpt.job_parsers",
        "actions": [json.loads(key) for key in table],
        "jobs": jobs,
    }


if __name__ == "__main__":
    STORED.write_text(json.dumps(describe_jobs(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {STORED}")
