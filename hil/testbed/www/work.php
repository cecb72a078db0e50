<?php
// One request of the MARLLB workload (the paper's GET /...php?n=...): burn CPU for n loop
// iterations, then answer with b bytes. The headers tell the client which server answered
// (MLB_SERVER, set per Apache instance with SetEnv) and what the request cost on that server;
// X-Pid and X-Cpu-Start (the worker's CPU time so far) let the CPU a worker spends between two
// scripts -- Apache's own work per request -- be measured too.
$t0 = hrtime(true);
$ru0 = getrusage();
$cpu0_s = $ru0['ru_utime.tv_sec'] + $ru0['ru_utime.tv_usec'] / 1e6
        + $ru0['ru_stime.tv_sec'] + $ru0['ru_stime.tv_usec'] / 1e6;
$n = isset($_GET['n']) ? max(0, (int) $_GET['n']) : 0;
$b = isset($_GET['b']) ? max(0, min((int) $_GET['b'], 1 << 24)) : 0;
$x = 0;
for ($i = 0; $i < $n; $i++) {
    $x += $i % 7;
}
$ru1 = getrusage();
$cpu_us = ($ru1['ru_utime.tv_sec'] - $ru0['ru_utime.tv_sec']) * 1e6
        + ($ru1['ru_utime.tv_usec'] - $ru0['ru_utime.tv_usec'])
        + ($ru1['ru_stime.tv_sec'] - $ru0['ru_stime.tv_sec']) * 1e6
        + ($ru1['ru_stime.tv_usec'] - $ru0['ru_stime.tv_usec']);
header('X-Server: ' . (getenv('MLB_SERVER') !== false ? getenv('MLB_SERVER') : '-1'));
header(sprintf('X-Start-Wall: %.6f', $_SERVER['REQUEST_TIME_FLOAT']));
header(sprintf('X-Service-S: %.6f', (hrtime(true) - $t0) / 1e9));
header(sprintf('X-Cpu-S: %.6f', $cpu_us / 1e6));
header('X-Loop: ' . ($x % 10));
header('X-Pid: ' . getmypid());
header(sprintf('X-Cpu-Start: %.6f', $cpu0_s));
header('Content-Type: application/octet-stream');
header('Content-Length: ' . $b);
echo str_repeat('x', $b);
