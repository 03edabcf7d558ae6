package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// rpc is a minimal XML-RPC client for supervisord's API over its unix
// socket. Safe for concurrent use.
type rpc struct {
	c *http.Client
}

func newRPC(sock string) *rpc {
	return &rpc{c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 16,
	}}}
}

// call invokes method with string, int or bool params and returns the
// decoded result: string, int, bool, []any or map[string]any.
func (r *rpc) call(timeout time.Duration, method string, params ...any) (any, error) {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><methodCall><methodName>` + method + `</methodName><params>`)
	for _, p := range params {
		b.WriteString("<param><value>")
		switch v := p.(type) {
		case string:
			b.WriteString("<string>" + html.EscapeString(v) + "</string>")
		case int:
			b.WriteString("<int>" + strconv.Itoa(v) + "</int>")
		case bool:
			x := "0"
			if v {
				x = "1"
			}
			b.WriteString("<boolean>" + x + "</boolean>")
		default:
			return nil, fmt.Errorf("xmlrpc: unsupported param %T", p)
		}
		b.WriteString("</value></param>")
	}
	b.WriteString("</params></methodCall>")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://supervisord/RPC2", strings.NewReader(b.String()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := r.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("xmlrpc %s: HTTP %d", method, resp.StatusCode)
	}
	return decodeResponse(data)
}

type xValue struct {
	Int     *string  `xml:"int"`
	I4      *string  `xml:"i4"`
	String  *string  `xml:"string"`
	Boolean *string  `xml:"boolean"`
	Double  *string  `xml:"double"`
	Struct  *xStruct `xml:"struct"`
	Array   *xArray  `xml:"array"`
	Text    string   `xml:",chardata"`
}

type xStruct struct {
	Members []struct {
		Name  string `xml:"name"`
		Value xValue `xml:"value"`
	} `xml:"member"`
}

type xArray struct {
	Values []xValue `xml:"data>value"`
}

type xResponse struct {
	Params []xValue `xml:"params>param>value"`
	Fault  *xValue  `xml:"fault>value"`
}

func decodeResponse(data []byte) (any, error) {
	var r xResponse
	if err := xml.NewDecoder(bytes.NewReader(data)).Decode(&r); err != nil {
		return nil, fmt.Errorf("xmlrpc: %w", err)
	}
	if r.Fault != nil {
		return nil, fmt.Errorf("xmlrpc fault: %v", r.Fault.decode())
	}
	if len(r.Params) == 0 {
		return nil, nil
	}
	return r.Params[0].decode(), nil
}

func (v xValue) decode() any {
	switch {
	case v.Int != nil:
		n, _ := strconv.Atoi(strings.TrimSpace(*v.Int))
		return n
	case v.I4 != nil:
		n, _ := strconv.Atoi(strings.TrimSpace(*v.I4))
		return n
	case v.String != nil:
		return *v.String
	case v.Boolean != nil:
		return strings.TrimSpace(*v.Boolean) == "1"
	case v.Double != nil:
		f, _ := strconv.ParseFloat(strings.TrimSpace(*v.Double), 64)
		return f
	case v.Struct != nil:
		m := map[string]any{}
		for _, mem := range v.Struct.Members {
			m[mem.Name] = mem.Value.decode()
		}
		return m
	case v.Array != nil:
		out := make([]any, len(v.Array.Values))
		for i, x := range v.Array.Values {
			out[i] = x.decode()
		}
		return out
	}
	return v.Text
}
