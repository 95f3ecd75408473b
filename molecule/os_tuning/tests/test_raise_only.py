"""Raise-only on a real kernel: the prepare step set net.core.somaxconn to 60000
on os-tuning-debian12, above the scenario's target of 4096; converging must keep it."""

from test_os_tuning import SYSCTL_FILE, settings_in_file, sysctl

testinfra_hosts = ["ansible://os-tuning-debian12"]


def test_a_setting_already_higher_is_kept(host):
    assert sysctl(host, "net.core.somaxconn") == "60000"
    content = host.file(SYSCTL_FILE).content_string
    assert "net.core.somaxconn: 60000 is above the target 4096, left as it is" in content
    assert "net.core.somaxconn" not in settings_in_file(host)
