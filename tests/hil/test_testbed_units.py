"""Testbed pieces that need no root: the plan (addresses, quotas, CPU pinning, what a machine
can host), cgroup quota arithmetic and detection, the access-log parser, and how the client's
records become the run contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hil.testbed import apache, cgroups
from hil.testbed.collect import contract_requests, summarise
from hil.testbed.plan import make_plan, pin_servers
from simulator.config import UserError, parse_config


def _cfg(cores: list[float], f: float = 0.1, lbs: int = 1, clients: int = 1, duration_s: float = 10.0):
    return parse_config({"duration_s": duration_s, "topology": {"lbs": lbs, "clients": clients,
                         "servers": [{"cores": c} for c in cores]}, "hil": {"cpu_per_core": f}})


def test_plan_names_addresses_and_quotas() -> None:
    plan = make_plan(_cfg([1, 2, 3], lbs=2, clients=2))
    assert [n.ns for n in plan.nodes] == ["mlb-c1", "mlb-c2", "mlb-lb1", "mlb-lb2", "mlb-s1", "mlb-s2", "mlb-s3"]
    ips = [n.ip for n in plan.nodes]
    macs = [n.mac for n in plan.nodes]
    assert len(set(ips)) == len(ips) and len(set(macs)) == len(macs)
    assert all(ip.startswith("198.18.") for ip in ips) and plan.vip.startswith("198.19.")
    assert [s.quota_cpus for s in plan.servers] == pytest.approx([0.1, 0.2, 0.3])
    assert all(len(n.port) <= 15 for n in plan.nodes)  # Linux interface names


def test_plan_refuses_what_the_machine_cannot_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    with pytest.raises(UserError, match=r"hil\.cpu_per_core.*set hil\.cpu_per_core <= 0\.05"):
        make_plan(_cfg([4, 4, 4, 4, 4], f=0.1))  # 2.0 CPUs of quota, 1.0 available
    with pytest.raises(UserError, match=r"topology\.servers: 65 servers, the local testbed hosts at "
                                        r"most 64 \(one namespace with Apache") as e:
        make_plan(_cfg([1] * 65, f=0.01))
    assert "shm" not in str(e.value)  # the testbed's own limit, not the data plane's
    make_plan(_cfg([2, 2, 4, 2], f=0.1))  # exactly 1.0: fits


def test_servers_are_packed_away_from_the_helper_cpu() -> None:
    plan = make_plan(_cfg([1, 2, 3], f=0.1))
    servers = list(plan.servers)
    packed = pin_servers(servers, [0, 1, 2])
    assert all(0 not in s.cpus for s in packed)  # CPU 0 is the client's and the LBs'
    loads = {1: 0.0, 2: 0.0}
    for s in packed:
        (c,) = s.cpus
        loads[c] += s.quota_cpus
    assert loads == pytest.approx({1: 0.3, 2: 0.3})  # largest first onto the least loaded
    big = pin_servers([servers[0].__class__("s", 1, cores=15, quota_cpus=1.5)], [0, 1, 2])
    assert big[0].cpus == (1, 2)  # a quota above one CPU gets ceil(quota) CPUs
    assert pin_servers(servers, [0])[0].cpus == (0,)  # one CPU: everything shares it


def test_cfs_period_keeps_the_quota_above_the_kernel_minimum() -> None:
    assert cgroups.period_for(0.5) == 5000
    assert cgroups.period_for(0.1) == 10000 and cgroups.period_for(0.04) == 25000
    assert cgroups.period_for(0.001) == 100_000
    for cpus in (0.04, 0.08, 0.1, 0.3, 1.0):
        assert cpus * cgroups.period_for(cpus) >= cgroups.MIN_QUOTA_US - 1e-6


def test_no_cpu_controller_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no cgroup CPU controller.*mount"):
        cgroups.detect(tmp_path)


def test_access_log_parser_reads_what_apache_writes(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("1796135210.931355 198.18.1.1 41234 200 15021 /work.php?n=10&b=100\n"
                   "garbage line\n"
                   "1796135211.000001 198.18.1.1 41236 503 12 /work.php?n=0&b=0\n")
    rows = apache.parse_access_log(log)
    assert [r["client_port"] for r in rows] == [41234, 41236]
    assert rows[0]["status"] == 200 and rows[0]["taken_us"] == 15021 and rows[0]["url"].endswith("b=100")


def test_records_become_the_run_contract() -> None:
    """Every outcome lands in exactly one status on the window [0, duration]; JCT runs from the
    scheduled arrival; late completions and late failures are in flight, as in the simulator."""
    cfg = _cfg([1, 2], duration_s=10.0)
    nan = np.nan
    rec = pd.DataFrame({
        "id": [0, 1, 2, 3, 4, 5, 6, 7],
        "client": 0, "lb": 0,
        "server": [0, 1, 0, -1, -1, 1, -1, -1],
        "t_arrive_s": [1.0, 2.0, 9.5, 3.0, 4.0, 5.0, 9.9, 9.99],
        "t_send_s": [1.001, 2.001, 9.501, 3.001, 4.001, 5.001, 9.901, nan],
        "t_connect_s": [1.002, 2.002, 9.502, nan, 4.002, 5.002, nan, nan],
        "t_first_byte_s": [1.1, 2.2, 10.4, nan, nan, 5.1, nan, nan],
        "t_last_byte_s": [1.2, 2.3, 10.5, nan, nan, 5.2, nan, nan],
        "outcome": ["completed", "completed", "completed", "refused", "reset", "http_error", "timeout",
                    "not_sent"],
        "service_s": [0.15, 0.2, 0.8, nan, nan, 0.05, nan, nan],
        "cpu_s": [0.01, 0.02, 0.05, nan, nan, 0.0, nan, nan],
        "t_server_start_s": [1.01, 2.05, 9.6, nan, nan, 5.01, nan, nan],
        "work_s": 0.1, "n_iter": 1000,
    })
    req = contract_requests(rec, cfg, timeout_s=5.0)
    status = dict(zip(req["id"], req["status"].astype(str)))
    assert status == {0: "completed", 1: "completed", 2: "in_flight", 3: "dropped", 4: "dropped",
                      5: "dropped", 6: "in_flight", 7: "in_flight"}
    assert req.loc[0, "jct_s"] == pytest.approx(0.2) and np.isnan(req.loc[2, "jct_s"])
    s = summarise(req, cfg, [1.0, 2.0], [0.1, 0.2], wall_s=12.0, packets=100)
    assert s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"] == 8
    assert s["jct_mean_s"] == pytest.approx((0.2 + 0.3) / 2)
    # busy = CPU the server's requests used in the window / (quota x window)
    assert s["per_server"][0]["busy_fraction"] == pytest.approx(0.01 / (0.1 * 10.0))
    assert s["per_server"][1]["busy_fraction"] == pytest.approx(0.02 / (0.2 * 10.0))


def test_prerequisites_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` checks before it creates anything: each missing piece is one error with its fix."""
    import shutil

    from hil.testbed import testbed

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(UserError, match="needs root.*sudo"):
        testbed.check_prerequisites()
    monkeypatch.setattr("os.geteuid", lambda: 0)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "apache2" else real_which(name))
    if real_which("ip") and real_which("ethtool") and real_which("taskset"):
        with pytest.raises(UserError, match="apache2 not found: apt-get install apache2 libapache2-mod-php"):
            testbed.check_prerequisites()


def test_cpu_between_scripts_per_worker() -> None:
    """A worker's CPU total at script start minus where its previous script ended (start +
    cpu_s): what Apache spent around the request; a worker's first request has none."""
    from hil.testbed.collect import between_scripts_cpu

    req = pd.DataFrame({"server": [0, 0, 0, 1, 0],
                        "worker_pid": [11, 12, 11, 11, 11],
                        "cpu_start_s": [1.000, 5.0, 1.012, 7.0, 1.030],
                        "cpu_s": [0.010, 0.2, 0.015, 0.1, 0.01]})
    got = between_scripts_cpu(req)
    assert np.isnan(got[0]) and np.isnan(got[1]) and np.isnan(got[3])  # first of (server, pid)
    assert got[2] == pytest.approx(0.002) and got[4] == pytest.approx(0.003)
    assert np.isnan(between_scripts_cpu(req.drop(columns=["worker_pid"]))).all()


def test_cli_refuses_what_the_testbed_cannot_run(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Before anything is built: a config this machine cannot host names the file and field;
    oracle policies are refused by name; nothing is written."""
    from experiments.cli import main

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    cfg = tmp_path / "big.yaml"
    cfg.write_text("topology: {lbs: 1, servers: [{cores: 1}, {cores: 1}]}\nhil: {cpu_per_core: 0.9}\n")
    assert main(["hil", "run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capfd.readouterr().err
    assert f"{cfg}: hil.cpu_per_core" in err and "1.80 CPUs" in err
    assert main(["hil", "compare", "experiments/configs/hil_small.yaml", "--out", str(tmp_path / "cmp"),
                 "--policies", "sed,gsq"]) == 2
    assert "gsq" in capfd.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cmp").exists()
