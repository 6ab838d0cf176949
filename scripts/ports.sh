# Sourced by the scripts that start a service on fixed loopback ports.

# check_ports_free VARIABLE PORT...: refuses ports something already listens on, naming the
# environment variable that chooses others. The start scripts' readiness checks would
# otherwise be answered by another instance, and their tests would run against it.
check_ports_free() {
    local variable=$1 port
    shift
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port on 127.0.0.1 is in use; choose other ports with $variable" >&2
            return 1
        fi
    done
}

# free_port: prints a port of 127.0.0.1 that nothing listens on now (for scripts that choose
# their own port rather than a fixed one), below Linux's ephemeral range (32768 and up), so
# that the outgoing connections of tests running meanwhile do not take it first.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}
