package proc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Server says how StartServer runs a server that listens on loopback.
type Server struct {
	Name, Bin string
	// Args are the server's arguments for the address it must listen on
	// ("127.0.0.1:PORT").
	Args func(addr string) []string
	// LogPath is the first attempt's log; a second attempt logs to
	// NAME.2.log beside it, so that the first one's error stays readable.
	LogPath string
	Options Options
	// ReadyPath is what answers 200 once the server serves (/-/ready,
	// /healthz, /readyz).
	ReadyPath string
	// Timeout bounds the wait for ReadyPath; default 30s.
	Timeout time.Duration
	// Reserve picks the address to try; default a free loopback port.
	Reserve func() (string, error)
}

// FreeAddr is a free loopback address, "127.0.0.1:PORT" (see FreePort).
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// StartServer starts s on a free loopback address and waits until it is
// ready. A free port can be taken by another process before the server binds
// it: when the first attempt's log says "address already in use", the server
// is started once more on another address. On any other failure the server
// is stopped and the error carries the end of its log.
func StartServer(ctx context.Context, s Server) (*Process, string, error) {
	reserve := s.Reserve
	if reserve == nil {
		reserve = FreeAddr
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	for attempt := 1; ; attempt++ {
		logPath := s.LogPath
		if attempt > 1 {
			logPath = filepath.Join(filepath.Dir(s.LogPath), fmt.Sprintf("%s.%d.log", s.Name, attempt))
		}
		addr, err := reserve()
		if err != nil {
			return nil, "", fmt.Errorf("start %s: %w", s.Name, err)
		}
		p, err := StartWith(s.Name, s.Bin, s.Args(addr), logPath, s.Options)
		if err != nil {
			return nil, "", err
		}
		err = WaitOK(ctx, p, "http://"+addr+s.ReadyPath, timeout)
		if err == nil {
			return p, addr, nil
		}
		_, _ = p.Stop(5 * time.Second)
		if attempt == 1 && PortTaken(logPath) {
			continue
		}
		return nil, "", fmt.Errorf("start %s: %w\n%s", s.Name, err, p.Tail(20))
	}
}

// PortTaken reports whether a server's log says its address was in use.
func PortTaken(logPath string) bool {
	data, err := os.ReadFile(logPath)
	return err == nil && bytes.Contains(data, []byte("address already in use"))
}

// WaitOK polls GET url until it answers 200, p exits, or timeout passes.
func WaitOK(ctx context.Context, p *Process, url string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return WaitUntil(wctx, p, 50*time.Millisecond, func(ctx context.Context) error {
		if code, body := get(ctx, url); code != http.StatusOK {
			return fmt.Errorf("GET %s: %d %s", url, code, body)
		}
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("exited while %s answered: %v", url, err)
		}
		return nil
	})
}

// get is GET url's status code (0 when no answer) and the start of its body.
func get(ctx context.Context, url string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b := make([]byte, 256)
	n, _ := resp.Body.Read(b)
	return resp.StatusCode, strings.TrimSpace(string(b[:n]))
}
