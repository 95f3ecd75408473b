"""gixy-ng, the nginx configuration analyzer, on the configuration each load
balancer really runs (`nginx -T`: every file, includes resolved). Findings of
LOW severity are listed; anything above fails unless roles/nginx_lb/README.md
justifies it (the JUSTIFIED checks below, each with its reason there). Measured
on the configuration before this check existed: 1 HIGH and 4 MEDIUM on Debian
12, 3 MEDIUM on sid."""

from __future__ import annotations

import json
import shutil
import subprocess

# gixy check name -> why it does not apply; roles/nginx_lb/README.md ("gixy-ng") says more.
JUSTIFIED: dict[str, str] = {
    "nginx_cves": "Debian backports security fixes without changing nginx's upstream version number",
    "worker_rlimit_nofile_vs_connections": "worker_connections already counts both sides of a proxied WebSocket",
}
SEVERITIES = ["UNSPECIFIED", "LOW", "MEDIUM", "HIGH"]


def test_gixy_finds_nothing_above_low_in_the_running_configuration(host):
    gixy = shutil.which("gixy")
    assert gixy, "gixy-ng is installed from requirements.txt"
    dump = host.check_output("nginx -T 2>/dev/null")
    version = host.check_output("nginx -v 2>&1").rsplit("/", 1)[-1].split()[0]
    completed = subprocess.run(
        [gixy, "--format", "json", "--nginx-version", version, "-"],
        input=dump,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(completed.stdout or "[]")
    print(f"gixy-ng on {host.backend.get_hostname()} (nginx {version}):")
    for finding in findings:
        print(f"  {finding['severity']} {finding['plugin']}: {finding['summary']}")
    serious = [
        finding
        for finding in findings
        if SEVERITIES.index(finding["severity"]) > SEVERITIES.index("LOW") and finding["plugin"] not in JUSTIFIED
    ]
    assert not serious, json.dumps(serious, indent=2)
