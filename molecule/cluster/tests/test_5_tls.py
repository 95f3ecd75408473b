"""TLS on the load balancer offers only TLS 1.2 and 1.3 (sslscan, from this machine)."""

import re
import subprocess

from conftest import LB_TLS


def test_only_tls_1_2_and_1_3_are_offered():
    output = subprocess.run(
        ["sslscan", "--no-colour", "--no-cipher-details", "--no-heartbleed", "--no-compression", LB_TLS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    protocols = dict(re.findall(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)", output, re.MULTILINE))
    assert protocols == {
        "SSLv2": "disabled",
        "SSLv3": "disabled",
        "TLSv1.0": "disabled",
        "TLSv1.1": "disabled",
        "TLSv1.2": "enabled",
        "TLSv1.3": "enabled",
    }, output
