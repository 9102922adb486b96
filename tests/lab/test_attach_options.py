"""`lab pod add`'s runtime arguments: parsed as libcni's RuntimeConf holds them, and handed to
a plugin only when its config declares the capability (libcni's injectRuntimeConfig)."""
from __future__ import annotations

import pytest

from lab.api import LabError
from lab.cli import main
from lab.cli.attach_options import attach_options
from lab.runtime.cni_runtime import with_runtime_config


def test_options_become_cni_args_and_capability_arguments():
    options = attach_options(cni_args_text="IgnoreUnknown=1;;IP=10.244.0.50",
                             ports=["8080:80", "10.99.0.11:53:5353/udp"],
                             mac_text="02:AA:00:00:00:01", ips=["10.244.0.7", "fd00::7/64"],
                             bandwidth_text="in=10M,out=512k")
    assert options.cni_args == "IgnoreUnknown=1;IP=10.244.0.50"
    assert options.capability_args == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                         {"hostPort": 53, "containerPort": 5353, "protocol": "udp",
                          "hostIP": "10.99.0.11"}],
        "mac": "02:aa:00:00:00:01",
        "ips": ["10.244.0.7", "fd00::7/64"],
        "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 10_000_000,
                      "egressRate": 512_000, "egressBurst": 512_000}}
    assert not attach_options()        # nothing asked: the plain create_pod call


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"cni_args_text": "IP"}, "--cni-args: 'IP' is not KEY=VALUE"),
    ({"cni_args_text": ""}, "--cni-args: '' is not KEY=VALUE"),
    ({"ports": ["80"]}, "--port: '80' is not HOST:POD[/PROTO]"),
    ({"ports": ["0:80"]}, "ports 1-65535"),
    ({"ports": ["80:80/icmp"]}, "tcp, udp or sctp"),
    ({"mac_text": "01:00:5e:00:00:01"}, "--mac: '01:00:5e:00:00:01' is not a unicast MAC"),
    ({"ips": ["10.244.0"]}, "--ip: '10.244.0' is not an IP address"),
    ({"bandwidth_text": "10M"}, "--bandwidth: '10M' is not in=RATE or out=RATE"),
    ({"bandwidth_text": "in=fast"}, "--bandwidth: in='fast' is not a rate"),
])
def test_bad_options_say_what_and_how(kwargs, expected):
    with pytest.raises(LabError) as info:
        attach_options(**kwargs)
    assert expected in info.value.describe() and "hint:" in info.value.describe()


def test_the_cli_refuses_bad_options_in_one_line_before_reading_the_lab(tmp_path, capsys):
    missing = tmp_path / "no-such-lab.toml"
    assert main(["-c", str(missing), "pod", "add", "node1", "web", "--port", "x"]) != 0
    err = capsys.readouterr().err
    assert "--port: 'x' is not HOST:POD[/PROTO]" in err and "Traceback" not in err


def test_only_declared_capabilities_reach_a_plugin():
    args = {"mac": "02:00:00:00:00:01", "portMappings": [{"hostPort": 1}]}
    tuning = {"type": "tuning", "capabilities": {"mac": True, "portMappings": False}}
    assert with_runtime_config(tuning, args)["runtimeConfig"] == {"mac": "02:00:00:00:00:01"}
    assert "runtimeConfig" not in with_runtime_config({"type": "ptp"}, args)
    assert "runtimeConfig" not in with_runtime_config(tuning, {"bandwidth": {}})
    assert "runtimeConfig" not in tuning                # the config itself is left alone
