package hollow

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Network is a private IPv4 network on this machine for hollow nodes: a
// bridge on the host holding the gateway address (where the control plane
// listens, controlplane.Options.Address) and one network namespace per node,
// joined to the bridge by a veth pair and holding the node's own address.
// The apiserver then sees each node's requests come from that address, as it
// would in a cluster. Nothing is routed off the machine: the namespaces have
// a route to the bridge's subnet only.
//
// Every name starts with a prefix unique to this process and Network
// ("hh<pid><letter>"), so that Close, and CleanupStale in a later run after a
// crash, remove exactly what this Network created. It needs root
// (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's ip.
type Network struct {
	prefix  string
	bridge  string
	gateway netip.Addr
	subnet  netip.Prefix
	ip      string

	mu     sync.Mutex
	spaces []*Namespace
	closed bool
}

// Namespace is one node's network namespace and address.
type Namespace struct {
	// Name is the namespace's name under /run/netns.
	Name string
	// Addr is the node's address on the Network.
	Addr netip.Addr
	// hostVeth is the bridge side of the node's veth pair.
	hostVeth string
}

// stateDir holds one record per live Network (its prefix: owner pid and the
// owner's start time), so that CleanupStale can tell a crashed run's
// leftovers from a live run's even when the pid has been reused.
const stateDir = "/run/herd-hollow"

// subnetBase is where Networks take their /24s: 10.231.0.0/16, skipping any
// that overlaps an address or route the machine already has.
var subnetBase = netip.MustParsePrefix("10.231.0.0/16")

var networkSeq atomic.Uint32

// ErrNeedsRoot marks the error of a Network started without the privileges
// (or the ip command) it needs; its text says what is missing.
var ErrNeedsRoot = errors.New("hollow: network namespaces need root and iproute2")

// NewNetwork creates the bridge and its gateway address, after removing what
// crashed earlier runs left behind (CleanupStale).
func NewNetwork() (n *Network, err error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("%w: the ip command is missing (apt-get install iproute2)", ErrNeedsRoot)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: run the tests as root (network namespaces and veth pairs need CAP_NET_ADMIN)", ErrNeedsRoot)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("hollow network: %w", err)
	}
	// One allocator at a time on this machine: the subnet check and the
	// address that claims it must not interleave with another run's.
	unlock, err := lockFile(filepath.Join(stateDir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := cleanupStaleLocked(ip); err != nil {
		return nil, err
	}
	seq := networkSeq.Add(1) - 1
	if seq >= 26 {
		return nil, errors.New("hollow network: more than 26 networks in one process")
	}
	n = &Network{prefix: fmt.Sprintf("hh%d%c", os.Getpid(), 'a'+seq), ip: ip}
	n.bridge = n.prefix + "b"
	if n.subnet, err = freeSubnet(ip); err != nil {
		return nil, err
	}
	n.gateway = n.subnet.Addr().Next()
	start, err := processStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stateDir, n.prefix), fmt.Appendf(nil, "%d %d\n", os.Getpid(), start), 0o644); err != nil {
		return nil, fmt.Errorf("hollow network: %w", err)
	}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	if err := n.run("link", "add", n.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := n.run("addr", "add", netip.PrefixFrom(n.gateway, n.subnet.Bits()).String(), "dev", n.bridge); err != nil {
		return nil, err
	}
	if err := n.run("link", "set", n.bridge, "up"); err != nil {
		return nil, err
	}
	return n, nil
}

// Gateway is the host's address on the network: give it to
// controlplane.Options.Address.
func (n *Network) Gateway() netip.Addr { return n.gateway }

// Prefix is the network's name prefix (bridge, veths, namespaces).
func (n *Network) Prefix() string { return n.prefix }

// Add creates a namespace with the next free address, its loopback up, and a
// veth pair to the bridge.
func (n *Network) Add() (ns *Namespace, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("hollow network: closed")
	}
	i := len(n.spaces) + 1
	addr := n.gateway
	for range i {
		addr = addr.Next()
	}
	if !n.subnet.Contains(addr) || addr == lastAddr(n.subnet) {
		return nil, fmt.Errorf("hollow network: %s is full (%d namespaces)", n.subnet, i-1)
	}
	ns = &Namespace{Name: fmt.Sprintf("%s-%d", n.prefix, i), Addr: addr, hostVeth: fmt.Sprintf("%sh%d", n.prefix, i)}
	peer := fmt.Sprintf("%sn%d", n.prefix, i)
	// Recorded before it exists, so Close removes a half-made namespace too.
	n.spaces = append(n.spaces, ns)
	steps := [][]string{
		{"netns", "add", ns.Name},
		{"link", "add", ns.hostVeth, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns.Name},
		{"link", "set", ns.hostVeth, "master", n.bridge},
		{"link", "set", ns.hostVeth, "up"},
		{"-n", ns.Name, "link", "set", peer, "name", "eth0"},
		{"-n", ns.Name, "addr", "add", netip.PrefixFrom(addr, n.subnet.Bits()).String(), "dev", "eth0"},
		{"-n", ns.Name, "link", "set", "eth0", "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := n.run(s...); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// Command is the program and arguments that run path with args inside the
// namespace. `ip netns exec` execs the program in place (same pid), so
// test/proc's process group and parent-death signal still hold.
func (ns *Namespace) Command(ip, path string, args ...string) (string, []string) {
	return ip, append([]string{"netns", "exec", ns.Name, path}, args...)
}

// Close deletes every namespace (which deletes its veth pair), the bridge and
// the network's record. It is safe to call more than once.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	for _, ns := range n.spaces {
		errs = append(errs, removeNamespace(n.ip, ns.Name, ns.hostVeth))
	}
	errs = append(errs, removeLink(n.ip, n.bridge))
	if err := os.Remove(filepath.Join(stateDir, n.prefix)); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Network) run(args ...string) error { return runIP(n.ip, args...) }

func runIP(ip string, args ...string) error {
	out, err := exec.Command(ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func removeNamespace(ip, name, hostVeth string) error {
	var errs []error
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		errs = append(errs, runIP(ip, "netns", "del", name))
	}
	// Deleting the namespace deletes its veth end and so the pair; this is
	// for a pair whose peer never moved into the namespace.
	errs = append(errs, removeLink(ip, hostVeth))
	return errors.Join(errs...)
}

// removeLink deletes a link if it is there. A veth pair goes away
// asynchronously after its namespace is deleted, so "Cannot find device"
// is success too.
func removeLink(ip, name string) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err != nil {
		return nil
	}
	err := runIP(ip, "link", "del", name)
	if err != nil && strings.Contains(err.Error(), "Cannot find device") {
		return nil
	}
	return err
}

// CleanupStale removes the namespaces, links and records that Networks of
// processes no longer running left behind (a test binary killed by its
// timeout runs no cleanup). Live runs' networks are left alone.
func CleanupStale() error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("%w: the ip command is missing (apt-get install iproute2)", ErrNeedsRoot)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("hollow network: %w", err)
	}
	unlock, err := lockFile(filepath.Join(stateDir, "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	return cleanupStaleLocked(ip)
}

// ourName matches every name a Network makes: hh<pid><letter> then b (the
// bridge), h<i> or n<i> (veth ends) or -<i> (namespaces).
var ourName = regexp.MustCompile(`^(hh([0-9]+)[a-z])(b|[hn][0-9]+|-[0-9]+)$`)

// ourRecord matches a record's name in stateDir: the prefix alone.
var ourRecord = regexp.MustCompile(`^hh([0-9]+)[a-z]$`)

func cleanupStaleLocked(ip string) error {
	stale := map[string]bool{} // prefix -> stale
	isStale := func(prefix, pid string) bool {
		if v, ok := stale[prefix]; ok {
			return v
		}
		v := prefixStale(prefix, pid)
		stale[prefix] = v
		return v
	}
	var errs []error
	nsEntries, _ := os.ReadDir("/run/netns")
	for _, e := range nsEntries {
		if m := ourName.FindStringSubmatch(e.Name()); m != nil && isStale(m[1], m[2]) {
			errs = append(errs, runIP(ip, "netns", "del", e.Name()))
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, e := range links {
		if m := ourName.FindStringSubmatch(e.Name()); m != nil && isStale(m[1], m[2]) {
			errs = append(errs, removeLink(ip, e.Name()))
		}
	}
	records, _ := os.ReadDir(stateDir)
	for _, e := range records {
		if m := ourRecord.FindStringSubmatch(e.Name()); m != nil && isStale(e.Name(), m[1]) {
			if err := os.Remove(filepath.Join(stateDir, e.Name())); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// prefixStale reports whether the run that owns prefix is gone: its process
// does not exist, or a process with a different start time now has its pid.
// A live process without a record (between its name and its record) is
// left alone.
func prefixStale(prefix, pidText string) bool {
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		return false
	}
	start, err := processStart(pid)
	if err != nil {
		return true // no such process
	}
	rec, err := os.ReadFile(filepath.Join(stateDir, prefix))
	if err != nil {
		return false
	}
	var recPid int
	var recStart uint64
	if _, err := fmt.Sscanf(string(rec), "%d %d", &recPid, &recStart); err != nil {
		return false
	}
	return recPid == pid && recStart != start
}

// processStart is field 22 of /proc/PID/stat, the process's start time in
// clock ticks since boot: with the pid, it names one process for good.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: fields count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(string(f[19]), 10, 64) // field 22 is the 20th after comm
}

// freeSubnet returns the first /24 of subnetBase that overlaps no address or
// route on the machine (another run's bridge holds its gateway address).
func freeSubnet(ip string) (netip.Prefix, error) {
	out, err := exec.Command(ip, "-o", "-4", "addr", "show").Output()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ip addr show: %w", err)
	}
	routes, err := exec.Command(ip, "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ip route show: %w", err)
	}
	var used []netip.Prefix
	for _, f := range bytes.Fields(append(out, routes...)) {
		if p, err := netip.ParsePrefix(string(f)); err == nil {
			used = append(used, p.Masked())
		} else if a, err := netip.ParseAddr(string(f)); err == nil && a.Is4() {
			used = append(used, netip.PrefixFrom(a, 32))
		}
	}
	base := subnetBase.Addr().As4()
	for i := 0; i < 256; i++ {
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], byte(i), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(cand) && u.Bits() > 0 {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("hollow network: no free /24 in %s", subnetBase)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lockFile takes an exclusive flock on path; the returned func releases it.
// The kernel releases it too when the process dies.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hollow network lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("hollow network lock: %w", err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
