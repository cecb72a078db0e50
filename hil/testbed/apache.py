"""Apache 2.4 prefork + mod_php as a testbed server: one instance per server namespace, each
from its own config file with its own PID file, runtime directory and logs.

The instance serves ``work.php`` (burn CPU for ``n`` PHP loop iterations, answer ``b`` bytes,
tell which server answered and what the request cost). ``MaxRequestWorkers`` = the server's
``workers`` (all started up front: prefork would otherwise grow its pool during the run),
``ListenBacklog`` = its ``backlog``. The access log records, per request, the client address
and port, the status, the time taken (µs) and the query, so flow placement can be checked
against what the servers saw."""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hil.testbed import sh
from simulator.config import UserError

__all__ = ["ApacheInstance", "render_config", "install_www", "check_installed", "parse_access_log",
           "MODULE_DIR", "PHP_MODULE", "ACCESS_FORMAT"]

MODULE_DIR = Path("/usr/lib/apache2/modules")
PHP_MODULE = "libphp8.2.so"
WWW_SOURCE = Path(__file__).with_name("www")
FALLBACK_WWW = Path("/run/mlb-www") if Path("/run").is_dir() else Path("/tmp/mlb-www")
#: access-log fields: request start (s.us since epoch), client ip, client port, status, µs taken, path+query
ACCESS_FORMAT = "%{%s}t.%{usec_frac}t %a %{remote}p %>s %D %U%q"
FIX_APACHE = "apt-get install apache2 libapache2-mod-php"


def check_installed() -> tuple[str, Path]:
    """(apache2 binary, PHP module) or UserError with the install command."""
    binary = sh.require_tool("apache2", FIX_APACHE)
    php = MODULE_DIR / PHP_MODULE
    if not php.is_file():
        found = sorted(MODULE_DIR.glob("libphp*.so")) if MODULE_DIR.is_dir() else []
        if not found:
            raise UserError(f"mod_php not found in {MODULE_DIR}: {FIX_APACHE}")
        php = found[-1]
    for mod in ("mod_mpm_prefork.so", "mod_authz_core.so", "mod_env.so"):
        if not (MODULE_DIR / mod).is_file():
            raise UserError(f"{MODULE_DIR / mod} missing: {FIX_APACHE}")
    return binary, php


def install_www(root: Path) -> Path:
    """Copy the document root to ``root/www`` -- or, when Apache's unprivileged user cannot
    reach into ``root`` (a private parent directory), to ``FALLBACK_WWW`` -- readable by that
    user; returns it."""
    www = root / "www" if _world_traversable(root) else FALLBACK_WWW
    www.mkdir(parents=True, exist_ok=True)
    for f in WWW_SOURCE.iterdir():
        if f.is_file():
            shutil.copy2(f, www / f.name)
            (www / f.name).chmod(0o644)
    www.chmod(0o755)
    return www


def _world_traversable(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def render_config(*, server_index: int, listen: str, workers: int, backlog: int, run_dir: Path,
                  www: Path, php_module: Path, access_log: bool = True) -> str:
    """The complete httpd config of one instance (nothing from /etc/apache2 is read);
    ``access_log`` False leaves out the per-request log (benchmarks of the client)."""
    log = (f'LogFormat "{ACCESS_FORMAT}" mlb\nCustomLog {run_dir / "access.log"} mlb\n'
           if access_log else "")
    m = MODULE_DIR
    return f"""# MARLLB testbed server {server_index} (generated; removed by `marllb hil down`)
LoadModule mpm_prefork_module {m / 'mod_mpm_prefork.so'}
LoadModule authz_core_module {m / 'mod_authz_core.so'}
LoadModule env_module {m / 'mod_env.so'}
LoadModule php_module {php_module}
ServerName mlb-s{server_index}
ServerRoot {run_dir}
Listen {listen}
User www-data
Group www-data
PidFile {run_dir / 'httpd.pid'}
DefaultRuntimeDir {run_dir}
Mutex file:{run_dir} default
ErrorLog {run_dir / 'error.log'}
LogLevel warn
{log}StartServers {workers}
MinSpareServers {workers}
MaxSpareServers {workers}
ServerLimit {workers}
MaxRequestWorkers {workers}
MaxConnectionsPerChild 0
ListenBacklog {backlog}
KeepAlive Off
Timeout 60
DocumentRoot {www}
<Directory />
    Require all denied
</Directory>
<Directory {www}>
    Require all granted
</Directory>
<FilesMatch "\\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
SetEnv MLB_SERVER {server_index - 1}
php_admin_value max_execution_time 0
"""


@dataclass
class ApacheInstance:
    """One Apache instance in namespace ``ns`` (None: this process's), files under ``run_dir``."""

    ns: str | None
    run_dir: Path
    cgroup_enter: str | None = None  # shell snippet that moves the shell into the server's cgroup
    cpus: tuple[int, ...] = ()  # pin the instance to these CPUs (empty: no pinning)

    @property
    def conf(self) -> Path:
        return self.run_dir / "httpd.conf"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "httpd.pid"

    @property
    def access_log(self) -> Path:
        return self.run_dir / "access.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        p = self.pid()
        return p is not None and sh.pid_alive(p)

    def write_config(self, text: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(text)

    def start(self, timeout_s: float = 10.0) -> int:
        """Start (daemonised, in the cgroup if given); returns the parent PID once the PID file
        names a live process. Raises UserError with the error log's tail on failure."""
        self.pid_file.unlink(missing_ok=True)
        self.access_log.unlink(missing_ok=True)
        binary, _ = check_installed()
        cmd = "exec " + shlex.join(sh.in_ns(self.ns, [binary, "-f", str(self.conf), "-k", "start"], self.cpus))
        if self.cgroup_enter:
            cmd = f"{self.cgroup_enter} && {cmd}"
        sh.run(["sh", "-c", cmd], timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            p = self.pid()
            if p is not None and sh.pid_alive(p):
                return p
            time.sleep(0.05)
        raise UserError(f"Apache in {self.ns} did not start: {self.error_tail()}")

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the instance (SIGTERM to the parent stops its children), then make sure."""
        p = self.pid()
        if p is not None:
            sh.kill_pids([p], grace_s=grace_s)
        self.pid_file.unlink(missing_ok=True)

    def error_tail(self, n: int = 5) -> str:
        f = self.run_dir / "error.log"
        if not f.is_file():
            return "(no error log)"
        return " | ".join(f.read_text(errors="replace").strip().splitlines()[-n:]) or "(empty error log)"


def parse_access_log(path: Path) -> list[dict[str, object]]:
    """Rows of an access log in ACCESS_FORMAT: t_start_wall_s, client_ip, client_port, status,
    taken_us, url."""
    rows: list[dict[str, object]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split(" ", 5)
        if len(parts) < 6:
            continue
        try:
            rows.append({"t_start_wall_s": float(parts[0]), "client_ip": parts[1],
                         "client_port": int(parts[2]), "status": int(parts[3]),
                         "taken_us": int(parts[4]), "url": parts[5]})
        except ValueError:
            continue
    return rows
