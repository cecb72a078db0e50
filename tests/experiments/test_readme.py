"""README stays true: generated config reference up to date, documented files and commands exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from experiments.cli import build_parser
from experiments.config_doc import BEGIN, END, config_reference

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_config_reference_is_current() -> None:
    block = README.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == config_reference().strip(), (
        "README config reference is stale: run python -m experiments.config_doc --write")


def test_two_command_setup() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip().startswith("pip install -e") and "marllb sim run" in blocks[0]
    # the default suite, then the root-only testbed tests
    assert blocks[1].strip().splitlines() == ["pytest", "pytest -m netns"]


def test_marllb_commands_in_readme_parse() -> None:
    parser = build_parser()
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for part in re.split(r"&&|\n", block):
            words = shlex.split(part.strip())
            if words[:1] == ["sudo"]:
                words = words[1:]
            if words and words[0] == "marllb":
                args = parser.parse_args(words[1:])
                config = getattr(args, "config", None)
                if config:
                    assert (REPO / config).is_file(), config


def test_example_configs_exist() -> None:
    for example in ("quickstart", "moderate_sed", "moderate_ecmp", "large_sed"):
        assert (REPO / "experiments/configs" / f"{example}.yaml").is_file()


def test_python_examples_run() -> None:
    """Every ```python block of the README runs as written (one step of each env it makes)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
        for name in ("env", "penv"):
            env = scope.get(name)
            if env is None:
                continue
            if hasattr(env, "possible_agents"):
                env.reset(seed=0)
                out = env.step({a: env.action_space(a).sample() for a in env.agents})
                assert set(out[1]) == set(env.possible_agents)
            else:
                env.reset(seed=0)
                assert len(env.step(env.action_space.sample())) == 5
