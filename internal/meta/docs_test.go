package meta

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/rbee/rbee-hive/internal/api"
	"github.com/rbee/rbee-hive/internal/config"
	"github.com/rbee/rbee-hive/internal/queen"
)

func readDoc(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every route of the OpenAPI document the hive serves is in docs/api.md, so
// the reference a user reads cannot drift from the API.
func TestDocsCoverEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPIDocument(), &doc); err != nil {
		t.Fatal(err)
	}
	text := readDoc(t, "docs/api.md")
	n := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete", "head", "options":
			default:
				continue
			}
			n++
			route := strings.ToUpper(method) + " " + path
			if !strings.Contains(text, "`"+route+"`") {
				t.Errorf("docs/api.md does not document `%s`", route)
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d routes in the OpenAPI document", n)
	}
}

// Every configuration key is in docs/configuration.md with its embedded
// default, and the page's example loads.
func TestDocsCoverEveryConfigKey(t *testing.T) {
	text := readDoc(t, "docs/configuration.md")
	keys := config.ConfigKeys()
	if len(keys) < 30 {
		t.Fatalf("only %d keys", len(keys))
	}
	for _, k := range keys {
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(k.Path) + "` \\| [a-z]+ \\| `(.*?)` \\|")
		m := row.FindStringSubmatch(text)
		switch {
		case m == nil:
			t.Errorf("docs/configuration.md has no row for `%s` (want: | `%s` | %s | `%s` | what it does |)", k.Path, k.Path, k.Kind, k.Default)
		case m[1] != k.Default:
			t.Errorf("docs/configuration.md: `%s` default is `%s`, the embedded default is `%s`", k.Path, m[1], k.Default)
		}
	}
	_, ex, ok := strings.Cut(text, "## Example\n\n```yaml\n")
	if !ok {
		t.Fatal("docs/configuration.md has no example")
	}
	ex, _, _ = strings.Cut(ex, "```")
	if _, err := config.Parse([]byte(ex)); err != nil {
		t.Fatalf("the example in docs/configuration.md does not load: %v", err)
	}
}

var mdLink = regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)

// The README and docs/ link only to files a clone has (a user's clone has
// no ../shared).
func TestDocsLinksResolve(t *testing.T) {
	root := repoRoot(t)
	files := []string{"README.md"}
	ds, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, d := range ds {
		r, _ := filepath.Rel(root, d)
		files = append(files, r)
	}
	sort.Strings(files)
	for _, f := range files {
		text := readDoc(t, f)
		if strings.Contains(text, "../shared") {
			t.Errorf("%s refers to ../shared, which a clone does not have", f)
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, filepath.Dir(f), target)); err != nil {
				t.Errorf("%s links %s, which does not exist", f, target)
			}
		}
	}
	for _, want := range []string{"docs/api.md", "docs/configuration.md", "docs/worker-contract.md", "docs/operations.md", "docs/cli.md"} {
		if !strings.Contains(readDoc(t, "README.md"), "("+want) {
			t.Errorf("README.md does not link %s", want)
		}
	}
}

// Regression: the hive.yaml that docs/cluster.md gives for each GPU box
// named a profile (llama-server) it did not define, so a hive started with
// it refused the file ("models.llama-8b: profile: no profile named
// \"llama-server\""). Both of the page's files must load as written.
func TestDocsClusterHiveExampleNamedAnUndefinedProfile(t *testing.T) {
	text := readDoc(t, "docs/cluster.md")
	blocks := strings.Split(text, "```yaml\n")
	if len(blocks) != 3 {
		t.Fatalf("docs/cluster.md: want 2 yaml blocks (hive.yaml, queen.yaml), got %d", len(blocks)-1)
	}
	hive, _, _ := strings.Cut(blocks[1], "```")
	if _, err := config.Parse([]byte(hive)); err != nil {
		t.Errorf("the hive.yaml in docs/cluster.md does not load: %v", err)
	}
	q, _, _ := strings.Cut(blocks[2], "```")
	if _, err := queen.ParseConfig([]byte(q)); err != nil {
		t.Errorf("the queen.yaml in docs/cluster.md does not load: %v", err)
	}
}
