// Package argv expands a profile's command template into the argv of a
// worker, token by token. Nothing here, or anywhere in the hive, goes
// through a shell: a value with spaces or ";" stays one argument.
package argv

import "strings"

// Placeholders a template may use.
var Placeholders = []string{"port", "model", "model_ref", "worker_id", "backend", "device", "hive_url", "gpu_uuid", "ctx"}

// Expand returns template with every "{name}" replaced by vars[name] inside
// each element; an element never splits or joins. Unknown placeholders are
// left as they are. Expand does not modify template.
func Expand(template []string, vars map[string]string) []string {
	pairs := make([]string, 0, 2*len(vars))
	for k, v := range vars {
		pairs = append(pairs, "{"+k+"}", v)
	}
	r := strings.NewReplacer(pairs...)
	out := make([]string, len(template))
	for i, t := range template {
		out[i] = r.Replace(t)
	}
	return out
}
