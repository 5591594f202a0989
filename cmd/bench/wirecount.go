package main

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// wireCounter counts the bytes of every connection the tool dials (HTTP
// requests and websockets alike): what crosses the network, after
// websocket compression.
type wireCounter struct {
	in, out atomic.Int64 // read from and written to the server
}

// dial is an http.Transport DialContext whose connections are counted.
func (w *wireCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, w: w}, nil
}

type countingConn struct {
	net.Conn
	w *wireCounter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.out.Add(int64(n))
	return n, err
}
