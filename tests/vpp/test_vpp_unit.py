"""Unit tests of hil/vpp.py that need no VPP.

Independent truth used here:
- the CLI grammar is read from the plugin's own ``.short_help`` strings in
  vpp_plugin/lb_rl/cli.c and turned into a regex; every command the builders
  produce must match it;
- the API field sets are read from vpp_plugin/lb_rl/lb_rl.api with a small
  parser written here (a parsed copy, NOT vppapigen's JSON); the
  vppapigen-JSON variant of the same check runs only when a VPP install with
  the plugin's lb_rl.api.json is found (VPP_PREFIX) and skips otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil import vpp

ROOT = Path(__file__).resolve().parents[2]
CLI_C = ROOT / "vpp_plugin" / "lb_rl" / "cli.c"
API_FILE = ROOT / "vpp_plugin" / "lb_rl" / "lb_rl.api"


# --- the CLI grammar from cli.c -------------------------------------------------


def _short_helps() -> dict[str, str]:
    """{path: short_help} of every VLIB_CLI_COMMAND in cli.c."""
    text = CLI_C.read_text()
    out = {}
    for block in re.findall(r"VLIB_CLI_COMMAND\s*\([^)]*\)\s*=\s*\{(.*?)\};", text, re.S):
        path = re.search(r'\.path\s*=\s*"([^"]+)"', block).group(1)
        helps = re.search(r"\.short_help\s*=\s*((?:\"[^\"]*\"\s*)+)", block).group(1)
        out[path] = "".join(re.findall(r'"([^"]*)"', helps))
    return out


def _grammar_regex(grammar: str) -> re.Pattern[str]:
    """Regex for a VPP short_help: words literal, <x> one token, [..]
    optional, a|b alternatives of single words, '...' repeats the item
    before it."""
    tokens = re.findall(r"\[|\]|[^\s\[\]]+", grammar)
    pos = 0

    def word(tok: str) -> str:
        if tok.startswith("<"):
            return r" \S+"
        return " (?:" + "|".join(re.escape(a) for a in tok.split("|")) + ")"

    def seq() -> str:
        nonlocal pos
        out: list[str] = []
        while pos < len(tokens) and tokens[pos] != "]":
            tok = tokens[pos]
            pos += 1
            if tok == "[":
                inner = seq()
                assert tokens[pos] == "]", grammar
                pos += 1
                out.append(f"(?:{inner})?")
            elif tok == "...":
                out[-1] = f"(?:{out[-1]})*"
            else:
                out.append(word(tok))
        return "".join(out)

    rx = seq()
    assert pos == len(tokens), grammar
    return re.compile(rx[1:] if rx.startswith(" ") else rx)


@pytest.fixture(scope="module")
def grammar() -> dict[str, re.Pattern[str]]:
    return {path: _grammar_regex(h) for path, h in _short_helps().items()}


def test_short_helps_found() -> None:
    helps = _short_helps()
    assert set(helps) == {"lb_rl vip", "lb_rl as", "lb_rl conf", "lb_rl weights", "show lb_rl"}
    for path, h in helps.items():
        assert h.startswith(path), (path, h)


def test_grammar_regex_rejects_garbage(grammar: dict[str, re.Pattern[str]]) -> None:
    # The regex must be able to fail, or the builder checks below prove nothing.
    assert not grammar["lb_rl vip"].fullmatch("lb_rl vip 198.18.0.10/32 encap vxlan")
    assert not grammar["lb_rl conf"].fullmatch("lb_rl conf policy foo")
    assert grammar["lb_rl conf"].fullmatch("lb_rl conf policy sed2 step 0.25")


@pytest.mark.parametrize(
    "path,cmd",
    [
        ("lb_rl vip", vpp.cli_vip("198.18.100.1/32", "gre4")),
        ("lb_rl vip", vpp.cli_vip("2001:db8::1/128", "gre6")),
        ("lb_rl vip", vpp.cli_vip("198.18.100.1/32", delete=True)),
        ("lb_rl vip", vpp.cli_vip("198.18.100.1/32", "gre4", flow_table_size=1024)),
        ("lb_rl as", vpp.cli_as("198.18.100.1/32", ["198.18.1.11"], 2.0)),
        ("lb_rl as", vpp.cli_as("198.18.100.1/32", ["198.18.1.11", "198.18.1.12"], 1.0)),
        ("lb_rl as", vpp.cli_as("198.18.100.1/32", ["198.18.1.11"], delete=True)),
        ("lb_rl conf", vpp.cli_conf(policy="lsq2", flow_timeout_s=40, step_s=0.25, fallback_s=1,
                                    ip4_src="198.18.1.1", ip6_src="2001:db8::1", shm_dir="/dev/shm")),
        ("lb_rl weights", vpp.cli_weights("198.18.100.1/32", [1.0, 1.2, 2.0])),
    ],
)
def test_cli_builders_match_plugin_grammar(grammar: dict[str, re.Pattern[str]], path: str, cmd: str) -> None:
    assert grammar[path].fullmatch(cmd), (cmd, grammar[path].pattern)


def test_cli_builder_exact_strings() -> None:
    assert vpp.cli_vip("198.18.100.1", "gre4") == "lb_rl vip 198.18.100.1/32 encap gre4"
    assert vpp.cli_vip("198.18.100.1", flow_table_size=1024) == (
        "lb_rl vip 198.18.100.1/32 encap gre4 flow-table-size 1024")
    assert vpp.cli_as("198.18.100.1/32", ["198.18.1.11", "198.18.1.12"], 2) == (
        "lb_rl as 198.18.100.1/32 198.18.1.11 198.18.1.12 weight 2.0"
    )
    assert vpp.cli_weights("198.18.100.1/32", [1, 0, 2.5]) == "lb_rl weights 198.18.100.1/32 1.0 0.0 2.5"


@pytest.mark.parametrize(
    "call",
    [
        lambda: vpp.cli_vip("198.18.100.1/32", "vxlan"),
        lambda: vpp.cli_vip("198.18.100.1/32", flow_table_size=1000),
        lambda: vpp.api_add_del_vip_v2("198.18.100.1/32", flow_table_size=1 << 31),
        lambda: vpp.cli_as("198.18.100.1/32", []),
        lambda: vpp.cli_as("198.18.100.1/32", ["198.18.1.11"], 0),
        lambda: vpp.cli_as("198.18.100.1/32", ["not-an-ip"]),
        lambda: vpp.cli_conf(),
        lambda: vpp.cli_conf(policy="best"),
        lambda: vpp.cli_weights("198.18.100.1/32", []),
        lambda: vpp.cli_weights("198.18.100.1/32", [1.0] * 4097),
        lambda: vpp.api_set_weights("198.18.100.1/32", [1.0] * 256),  # u8 count: use _v2
        lambda: vpp.cli_vip("198.18.100.1/32", max_servers=4097),
        lambda: vpp.api_add_del_vip_v3("198.18.100.1/32", max_servers=-1),
    ],
)
def test_builders_reject_bad_input(call) -> None:
    with pytest.raises(ValueError):
        call()


# --- API messages against lb_rl.api ------------------------------------------


def _parse_api(text: str) -> dict[str, list[str]]:
    """{message: [field names]} of every define in an .api file (comments
    stripped; 'option' lines and client_index/context dropped)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out = {}
    for name, body in re.findall(r"define\s+(\w+)\s*\{(.*?)\};", text, re.S):
        fields = []
        for stmt in body.split(";"):
            stmt = stmt.strip()
            if not stmt or stmt.startswith("option"):
                continue
            m = re.match(r"[\w]+\s+(\w+)", stmt)
            assert m, stmt
            if m.group(1) not in ("client_index", "context"):
                fields.append(m.group(1))
        out[name] = fields
    return out


def _api_enums(text: str) -> dict[str, dict[str, int]]:
    out = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*:\s*\w+\s*\{(.*?)\};", text, re.S):
        out[name] = {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}
    return out


@pytest.fixture(scope="module")
def api_msgs() -> dict[str, list[str]]:
    return _parse_api(API_FILE.read_text())


def test_api_parser_sees_all_messages(api_msgs: dict[str, list[str]]) -> None:
    for m in ("lb_rl_conf", "lb_rl_add_del_vip", "lb_rl_add_del_as", "lb_rl_set_weights",
              "lb_rl_add_del_vip_v3", "lb_rl_set_weights_v2",
              "lb_rl_vip_dump", "lb_rl_vip_details", "lb_rl_as_dump", "lb_rl_as_details",
              "lb_rl_stats_get", "lb_rl_stats_get_reply", "lb_rl_conf_get"):
        assert m in api_msgs


@pytest.mark.parametrize(
    "msg,fields",
    [
        ("lb_rl_conf", vpp.api_conf(policy="sed", step_s=0.25, ip4_src="198.18.1.1")),
        ("lb_rl_add_del_vip", vpp.api_add_del_vip("198.18.100.1/32", "gre4")),
        ("lb_rl_add_del_vip_v2", vpp.api_add_del_vip_v2("198.18.100.1/32", "gre4", 1024)),
        ("lb_rl_add_del_as", vpp.api_add_del_as("198.18.100.1/32", "198.18.1.11", 2.0)),
        ("lb_rl_set_weights", vpp.api_set_weights("198.18.100.1/32", [1.0, 2.0])),
        ("lb_rl_add_del_vip_v3", vpp.api_add_del_vip_v3("198.18.100.1/32", "gre4", 1024, 4096)),
        ("lb_rl_set_weights_v2", vpp.api_set_weights_v2("198.18.100.1/32", [1.0] * 4096)),
    ],
)
def test_api_fields_match_api_file(api_msgs: dict[str, list[str]], msg: str, fields: dict) -> None:
    assert sorted(fields) == sorted(api_msgs[msg])


def test_api_enums_match_module_constants() -> None:
    enums = _api_enums(API_FILE.read_text())
    assert {k.removeprefix("LB_RL_API_ENCAP_").lower(): v for k, v in enums["lb_rl_encap"].items()} == vpp.ENCAPS
    assert {k.removeprefix("LB_RL_API_POLICY_").lower(): v for k, v in enums["lb_rl_policy"].items()} == vpp.POLICIES


def test_policy_values_match_core_header() -> None:
    hdr = (ROOT / "vpp_plugin" / "core" / "lb_rl_core.h").read_text()
    core = {k.lower(): int(v) for k, v in re.findall(r"LB_RL_POLICY_(\w+)\s*=\s*(\d+)", hdr) if k != "N_POLICIES" and k != "N"}
    assert core == vpp.POLICIES


def test_api_json_from_vppapigen_if_installed() -> None:
    prefix = os.environ.get("VPP_PREFIX")
    if not prefix:
        pytest.skip("VPP_PREFIX unset: no vppapigen JSON to check against (parsed copy checked above)")
    found = list(Path(prefix).glob("share/vpp/api/**/lb_rl.api.json"))
    if not found:
        pytest.skip(f"no lb_rl.api.json under {prefix}/share/vpp/api (plugin not installed there)")
    j = json.loads(found[0].read_text())
    msgs = {m[0]: [f[1] for f in m[1:] if isinstance(f, list)] for m in j["messages"]}
    for msg, fields in [
        ("lb_rl_add_del_vip", vpp.api_add_del_vip("198.18.100.1/32")),
        ("lb_rl_add_del_vip_v2", vpp.api_add_del_vip_v2("198.18.100.1/32")),
        ("lb_rl_add_del_as", vpp.api_add_del_as("198.18.100.1/32", "198.18.1.11")),
        ("lb_rl_set_weights", vpp.api_set_weights("198.18.100.1/32", [1.0])),
        ("lb_rl_add_del_vip_v3", vpp.api_add_del_vip_v3("198.18.100.1/32")),
        ("lb_rl_set_weights_v2", vpp.api_set_weights_v2("198.18.100.1/32", [1.0])),
        ("lb_rl_conf", vpp.api_conf(policy="sed")),
    ]:
        want = [f for f in msgs[msg] if f not in ("_vl_msg_id", "client_index", "context")]
        assert sorted(fields) == sorted(want), msg


# --- import and error behaviour ---------------------------------------------------


def test_imports_without_vpp_papi_and_fails_clearly() -> None:
    code = (
        "import sys; sys.modules['vpp_papi'] = None\n"
        "from hil import vpp\n"
        "try:\n"
        "    vpp.PapiTransport(vpp.VppPaths())\n"
        "except vpp.VppError as e:\n"
        "    print('ERR', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout.startswith("ERR vpp_papi is not installed")


def test_every_cli_error_message_is_detected() -> None:
    """Every clib_error_return text in cli.c must be recognised as an error."""
    text = CLI_C.read_text()
    msgs = re.findall(r'clib_error_return\s*\(\s*0,\s*"([^"]*)"', text)
    assert len(msgs) > 10
    for m in msgs:
        m = m.replace("%s", "lb_rl vip")
        assert vpp._looks_like_cli_error(m), m


def test_cli_error_detection() -> None:
    assert vpp._looks_like_cli_error("lb_rl vip: already exists")
    assert vpp._looks_like_cli_error("unknown input `foo'")
    assert vpp._looks_like_cli_error("lb_rl: parse error: 'bar'")
    assert vpp._looks_like_cli_error("lb_rl as: server address family does not match")
    assert not vpp._looks_like_cli_error("conf policy sed timeout 40.000s")
    # real replies of other VPP commands seen in VPP 26.10
    assert vpp._looks_like_cli_error("packet-generator new: failed to parse packet data from `'")
    assert vpp._looks_like_cli_error("packet-generator enable-stream: unknown input `syn'")
    assert not vpp._looks_like_cli_error("vip 0")
    assert not vpp._looks_like_cli_error("")
