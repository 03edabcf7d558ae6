package api

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// streamClient is who a stream counts against (the per-client stream
// bound): the peer's IP, except on loopback, where every local process
// shares 127.0.0.1 — there it is the local user owning the peer socket, so
// one local user's streams cannot lock another (the operator) out of
// /v1/events (SPEC §14).
func streamClient(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	remote, err1 := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if err1 != nil || !ok || !remote.IP.IsLoopback() {
		return host
	}
	la, err := net.ResolveTCPAddr("tcp", local.String())
	if err != nil {
		return host
	}
	if uid, ok := loopbackPeerUID(remote, la); ok {
		return host + " uid " + strconv.Itoa(uid)
	}
	return host
}

// loopbackPeerUID finds, in /proc/net/tcp, the uid owning the IPv4 socket
// whose local address is peer and remote address is us.
func loopbackPeerUID(peer, us *net.TCPAddr) (int, bool) {
	p4, u4 := peer.IP.To4(), us.IP.To4()
	if p4 == nil || u4 == nil {
		return 0, false
	}
	enc := func(ip net.IP, port int) string {
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], port)
	}
	wantLocal, wantRemote := enc(p4, peer.Port), enc(u4, us.Port)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 || fs[1] != wantLocal || fs[2] != wantRemote {
			continue
		}
		uid, err := strconv.Atoi(fs[7])
		return uid, err == nil
	}
	return 0, false
}
