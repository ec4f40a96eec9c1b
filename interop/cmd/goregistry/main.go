// Command goregistry shows go-micro's view of its etcd registry, through go-micro's registry
// API, as JSON: the interop tests use it to see micro-rs nodes as Go sees them.
//
//	goregistry list              ListServices, then GetService of each: one JSON array
//	goregistry get NAME          GetService(NAME): one JSON array (one Service per version)
//	goregistry watch [NAME]      go-micro's watcher: one JSON line per event {action, service}
//	goregistry poll NAME [EVERY] GetService(NAME) every EVERY (default 50ms): one JSON line
//	                             {"nodes": [ids]} whenever the set of node ids changes
//
// The registry address comes from MICRO_REGISTRY_ADDRESS (comma-separated), as in go-micro.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go-micro.dev/v5/registry"
	"go-micro.dev/v5/registry/etcd"

	"github.com/micro-rs/micro-rs/interop/internal/codecfix"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "goregistry:", err)
	os.Exit(1)
}

// Event is one watch result as go-micro's watcher returns it.
type Event struct {
	Action  string            `json:"action"`
	Service *registry.Service `json:"service"`
}

func init() { codecfix.Register() }

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: goregistry list | get NAME | watch [NAME] | poll NAME [EVERY]"))
	}
	addrs := strings.Split(os.Getenv("MICRO_REGISTRY_ADDRESS"), ",")
	reg := etcd.NewEtcdRegistry(registry.Addrs(addrs...))
	out := json.NewEncoder(os.Stdout)
	arg := func(i int) string {
		if len(os.Args) > i {
			return os.Args[i]
		}
		return ""
	}

	switch os.Args[1] {
	case "list":
		list, err := reg.ListServices()
		if err != nil {
			fail(err)
		}
		all := []*registry.Service{}
		for _, s := range list {
			full, err := reg.GetService(s.Name)
			if err != nil {
				fail(err)
			}
			all = append(all, full...)
		}
		if err := out.Encode(all); err != nil {
			fail(err)
		}
	case "get":
		services, err := reg.GetService(arg(2))
		if err != nil && err != registry.ErrNotFound {
			fail(err)
		}
		if services == nil {
			services = []*registry.Service{}
		}
		if err := out.Encode(services); err != nil {
			fail(err)
		}
	case "watch":
		var opts []registry.WatchOption
		if name := arg(2); name != "" {
			opts = append(opts, registry.WatchService(name))
		}
		w, err := reg.Watch(opts...)
		if err != nil {
			fail(err)
		}
		// go-micro's watcher is ready once Watch returns; say so for the tests.
		fmt.Println(`{"action":"ready"}`)
		for {
			res, err := w.Next()
			if err != nil {
				fail(err)
			}
			if err := out.Encode(Event{Action: res.Action, Service: res.Service}); err != nil {
				fail(err)
			}
		}
	case "poll":
		every := 50 * time.Millisecond
		if e := arg(3); e != "" {
			d, err := time.ParseDuration(e)
			if err != nil {
				fail(err)
			}
			every = d
		}
		var last []string
		first := true
		for {
			ids := []string{}
			services, err := reg.GetService(arg(2))
			if err != nil && err != registry.ErrNotFound {
				fmt.Fprintln(os.Stderr, "goregistry: get:", err)
			} else {
				for _, s := range services {
					for _, n := range s.Nodes {
						ids = append(ids, n.Id)
					}
				}
				slices.Sort(ids)
				if first || !slices.Equal(ids, last) {
					if err := out.Encode(map[string][]string{"nodes": ids}); err != nil {
						fail(err)
					}
					first = false
					last = ids
				}
			}
			time.Sleep(every)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
