package deps
import (
 _ "gopkg.in/yaml.v3"
 _ "golang.org/x/sys/unix"
 _ "go.uber.org/goleak"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/google/uuid"
 _ "github.com/schollz/progressbar/v3"
)
