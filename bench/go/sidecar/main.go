// Command sidecar serves echo.Echo on a unix stream socket, the classic
// alternative to nbffi: each request and reply is a frame of a 4-byte
// big-endian length and that many bytes.  Connections are kept open and
// served one frame at a time, each connection in its own goroutine.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"

	"nbffi.dev/bench/go/echo"
)

const maxFrame = 64 << 20

func serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	var hdr [4]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxFrame {
			log.Printf("frame of %d bytes refused", n)
			return
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}

		reply, err := echo.Echo(context.Background(), buf)
		if err != nil {
			log.Print(err)
			return
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(len(reply)))
		bufs := net.Buffers{hdr[:], reply}
		if _, err := bufs.WriteTo(c); err != nil {
			return
		}
	}
}

// serveStream answers each request frame "TOTAL CHUNK" with TOTAL bytes
// in frames of CHUNK bytes, then an empty frame: the sidecar's way to
// stream (bench/go/stream).
func serveStream(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 64<<10)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > 256 {
			log.Printf("stream request of %d bytes refused", n)
			return
		}
		req := make([]byte, n)
		if _, err := io.ReadFull(r, req); err != nil {
			return
		}
		var total, size int
		if _, err := fmt.Sscan(string(req), &total, &size); err != nil || size <= 0 {
			log.Printf("bad stream request %q", req)
			return
		}
		chunk := make([]byte, size)
		for sent := 0; sent < total; sent += size {
			n := min(size, total-sent)
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			w.Write(hdr[:])
			w.Write(chunk[:n])
			if sent == 0 {
				// the first chunk goes out at once, as nbffi's does
				if err := w.Flush(); err != nil {
					return
				}
			}
		}
		binary.BigEndian.PutUint32(hdr[:], 0)
		w.Write(hdr[:])
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func listen(path string, serve func(net.Conn)) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go serve(c)
		}
	}()
}

func main() {
	path := flag.String("socket", "", "unix socket path to listen on")
	streamPath := flag.String("stream-socket", "",
		"unix socket path for streams (optional)")
	flag.Parse()

	listen(*path, serve)
	if *streamPath != "" {
		listen(*streamPath, serveStream)
	}
	fmt.Println("listening on", *path)
	select {}
}
