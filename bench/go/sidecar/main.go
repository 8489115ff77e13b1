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

func main() {
	path := flag.String("socket", "", "unix socket path to listen on")
	flag.Parse()

	_ = os.Remove(*path)
	ln, err := net.Listen("unix", *path)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.Chmod(*path, 0o666); err != nil {
		log.Fatal(err)
	}
	fmt.Println("listening on", *path)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c)
	}
}
