"""Machine settings: the ports Relay picks for the servers and process groups it starts."""

import socket

from components.settings import _ephemeral_port_range, free_ports


def test_free_ports_are_distinct_bindable_and_never_ones_the_kernel_gives_outgoing_connections():
    low, high = _ephemeral_port_range()
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not any(low <= port <= high for port in ports), (ports, low, high)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
