package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// RelayFloorArg, as hivebench's first argument with a worker's host:port
// second, makes it the relay floor: the least a proxy in its own process
// can do for a non-streaming request — read the head and the body by its
// Content-Length, write them unchanged to a kept-alive connection to the
// worker, read the answer by its Content-Length and write it back — with
// no routing, no bookkeeping and no checks. What it adds over going
// straight to the worker is what this machine charges for one more hop
// (two more processes' worth of syscalls and wake-ups on the same cores),
// the floor under the front door's added latency. It prints its address,
// then serves until its standard input closes.
const RelayFloorArg = "__relay-floor"

// RelayFloor runs the relay floor (see RelayFloorArg) in front of target.
func RelayFloor(target string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		ln.Close()
	}()
	var pool sync.Pool
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		go floorServe(c, target, &pool)
	}
}

type floorConn struct {
	c  net.Conn
	br *bufio.Reader
}

func floorServe(c net.Conn, target string, pool *sync.Pool) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 8<<10)
	var out []byte
	for {
		req, err := floorMessage(br, nil)
		if err != nil {
			return
		}
		w, _ := pool.Get().(*floorConn)
		if w == nil {
			wc, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			w = &floorConn{c: wc, br: bufio.NewReaderSize(wc, 8<<10)}
		}
		if _, err := w.c.Write(req); err != nil {
			w.c.Close()
			return
		}
		if out, err = floorMessage(w.br, out[:0]); err != nil {
			w.c.Close()
			return
		}
		pool.Put(w)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// floorMessage appends to buf one HTTP/1.1 message read from br: its head
// and the body of its Content-Length.
func floorMessage(br *bufio.Reader, buf []byte) ([]byte, error) {
	length := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		buf = append(buf, line...)
		if len(line) <= 2 {
			break
		}
		if k, v, ok := strings.Cut(string(line), ":"); ok && strings.EqualFold(k, "Content-Length") {
			if length, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return nil, err
			}
		}
	}
	n := len(buf)
	buf = append(buf, make([]byte, length)...)
	_, err := io.ReadFull(br, buf[n:])
	return buf, err
}

// relayFloor starts the relay floor in front of the worker at workerURL
// (http://host:port) and returns its URL and the function that stops it.
func relayFloor(workerURL string) (string, func(), error) {
	addr, _, stop, err := startSelf(RelayFloorArg, strings.TrimPrefix(workerURL, "http://"))
	if err != nil {
		return "", nil, fmt.Errorf("relay floor: %w", err)
	}
	return "http://" + addr, stop, nil
}
