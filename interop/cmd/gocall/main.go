// Command gocall calls a service through go-micro's gRPC client, discovering its nodes in
// go-micro's etcd registry, and prints one JSON line per call: {"msg": ...} on success,
// {"error": {id, code, detail, status}, "text": ...} on failure. The interop tests use it as
// the Go caller of micro-rs services.
//
//	gocall --service greeter2 --endpoint Greeter.Test --name you --timeout 50ms \
//	       --md x-user=alice --count 4
//
// The registry address comes from MICRO_REGISTRY_ADDRESS (comma-separated), as in go-micro.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go-micro.dev/v5/client"
	grpcclient "go-micro.dev/v5/client/grpc"
	"go-micro.dev/v5/errors"
	"go-micro.dev/v5/metadata"
	"go-micro.dev/v5/registry"
	"go-micro.dev/v5/registry/etcd"
	"go-micro.dev/v5/selector"

	pb "github.com/micro-rs/micro-rs/interop/greeterpb"
	"github.com/micro-rs/micro-rs/interop/internal/codecfix"
)

type mdFlags map[string]string

func (m mdFlags) String() string { return fmt.Sprint(map[string]string(m)) }
func (m mdFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want key=value, got %q", v)
	}
	m[k] = val
	return nil
}

// Result is one call's outcome.
type Result struct {
	Msg   *string       `json:"msg,omitempty"`
	Error *errors.Error `json:"error,omitempty"`
	Text  string        `json:"text,omitempty"`
	Ms    float64       `json:"ms"`
}

func init() { codecfix.Register() }

func main() {
	md := mdFlags{}
	service := flag.String("service", "greeter2", "service to call")
	endpoint := flag.String("endpoint", "Greeter.Test", "endpoint to call")
	name := flag.String("name", "go", "Request.name")
	timeout := flag.Duration("timeout", 0, "request timeout (0: go-micro's default)")
	retries := flag.Int("retries", -1, "retries (-1: go-micro's default)")
	count := flag.Int("count", 1, "number of calls, one after the other")
	address := flag.String("address", "", "call this node address instead of discovering")
	flag.Var(md, "md", "metadata key=value (repeatable)")
	flag.Parse()

	addrs := strings.Split(os.Getenv("MICRO_REGISTRY_ADDRESS"), ",")
	reg := etcd.NewEtcdRegistry(registry.Addrs(addrs...))
	sel := selector.NewSelector(selector.Registry(reg))
	opts := []client.Option{client.Registry(reg), client.Selector(sel)}
	if *timeout > 0 {
		opts = append(opts, client.RequestTimeout(*timeout))
	}
	if *retries >= 0 {
		opts = append(opts, client.Retries(*retries))
	}
	c := grpcclient.NewClient(opts...)

	out := json.NewEncoder(os.Stdout)
	for i := 0; i < *count; i++ {
		ctx := context.Background()
		if len(md) > 0 {
			ctx = metadata.NewContext(ctx, metadata.Metadata(md))
		}
		var callOpts []client.CallOption
		if *address != "" {
			callOpts = append(callOpts, client.WithAddress(*address))
		}
		rsp := &pb.Response{}
		started := time.Now()
		err := c.Call(ctx, c.NewRequest(*service, *endpoint, &pb.Request{Name: *name}), rsp, callOpts...)
		res := Result{Ms: float64(time.Since(started).Microseconds()) / 1000}
		if err != nil {
			res.Text = err.Error()
			if verr, ok := err.(*errors.Error); ok {
				res.Error = verr
			} else {
				res.Error = errors.Parse(err.Error())
			}
		} else {
			res.Msg = &rsp.Msg
		}
		if err := out.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
