package herdtest

import "github.com/prometheus/exporter-toolkit/web"

// WebFlags is an exporter-toolkit listener configuration as a test gives
// herd's programs: addrs, no systemd socket, webConfig as
// --web.config.file ("" for none).
func WebFlags(webConfig string, addrs ...string) web.FlagConfig {
	off := false
	return web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &off, WebConfigFile: &webConfig}
}
