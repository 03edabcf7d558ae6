// Package version holds the one version string of rbee-hive's programs (the
// hive, its CLI and the queen), so that they cannot drift apart.
package version

// Version is the release version, set at build time with
// -ldflags '-X github.com/rbee/rbee-hive/internal/version.Version=…'.
var Version = "0.1.0-dev"
