// Command greeter is the seed's greeter on go-micro, with go-micro's etcd registry and its
// gRPC server and client, for micro-rs's interop tests and as the benchmark's go-micro peer.
//
// Greeter.Test sleeps (100 ms by default) and answers "test <name> from <node id>", as
// micro-rs's greeter2 does; Greeter.Hello calls a configured service's Greeter.Test through
// go-micro's client and answers "greeter1 <- <reply>", as micro-rs's greeter1 does.
//
// Configured by go-micro's own flags and environment (MICRO_REGISTRY, MICRO_REGISTRY_ADDRESS,
// MICRO_SERVER_NAME, MICRO_SERVER_ID, MICRO_SERVER_ADDRESS, MICRO_REGISTER_TTL, ...), plus:
//
//	--call / INTEROP_CALL               service whose Greeter.Test Hello calls (greeter2)
//	--test_sleep / INTEROP_TEST_SLEEP   how long Test sleeps (100ms; 0 for load)
//	--hello_self / INTEROP_HELLO_SELF   Hello answers by itself, calling nobody (for load)
//	--otel / INTEROP_OTEL               wrap handler and client with go-micro's OpenTelemetry
//	                                    wrappers, W3C trace context propagated
//	--otel_endpoint / INTEROP_OTEL_ENDPOINT
//	                                    also record spans with the OpenTelemetry SDK and send
//	                                    them in batches over OTLP/gRPC to this host:port
//	                                    (implies --otel; empty: spans are no-ops)
//	--otel_ratio / INTEROP_OTEL_RATIO   the SDK sampler: parent-based, trace-id ratio (0.9)
//	--metrics_address / INTEROP_METRICS_ADDRESS
//	                                    wrap handler and client with go-micro's Prometheus
//	                                    wrapper and serve /metrics on this host:port
//	--tls_cert, --tls_key / INTEROP_TLS_CERT, INTEROP_TLS_KEY
//	                                    PEM certificate and key: the server serves TLS with
//	                                    them (go-micro's AuthTLS) and the client presents them
//	--tls_ca / INTEROP_TLS_CA           PEM CA bundle: the client dials every node with TLS
//	                                    (AuthTLS) verifying against it, and with --tls_cert
//	                                    the server requires client certificates signed by it
//	--tls_server_name / INTEROP_TLS_SERVER_NAME
//	                                    the name the client expects in servers' certificates
//
// For the tests, a request name selects a behaviour of Test (and of Hello with hello_self):
//
//	error:<code>:<id>:<detail>   returns go-micro's errors.New(id, detail, code)
//	echo                         answers with JSON: node id, the metadata the handler saw and
//	                             the time left to the context's deadline
//
// Run with: MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=127.0.0.1:2379
// MICRO_SERVER_NAME=greeter2 MICRO_SERVER_ADDRESS=127.0.0.1:9092 MICRO_BROKER_ADDRESS=127.0.0.1:0
// ./greeter
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go-micro.dev/v5"
	"go-micro.dev/v5/client"
	grpcclient "go-micro.dev/v5/client/grpc"
	"go-micro.dev/v5/errors"
	"go-micro.dev/v5/logger"
	"go-micro.dev/v5/metadata"
	grpcserver "go-micro.dev/v5/server/grpc"
	promwrap "go-micro.dev/v5/wrapper/monitoring/prometheus"
	otelwrap "go-micro.dev/v5/wrapper/trace/opentelemetry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	pb "github.com/micro-rs/micro-rs/interop/greeterpb"
	"github.com/micro-rs/micro-rs/interop/internal/codecfix"
)

// Greeter is the handler; go-micro names its endpoints after the struct: Greeter.Test and
// Greeter.Hello.
type Greeter struct {
	node      func() string
	client    client.Client
	call      string
	testSleep time.Duration
	helloSelf bool
}

// Echo is what a call named "echo" answers with (as JSON in Response.msg).
type Echo struct {
	Node       string            `json:"node"`
	Metadata   map[string]string `json:"metadata"`
	DeadlineMs *int64            `json:"deadline_ms"`
}

// special handles the test behaviours selected by the request name; ok is false for a plain
// name.
func (g *Greeter) special(ctx context.Context, name string, rsp *pb.Response) (bool, error) {
	if rest, found := strings.CutPrefix(name, "error:"); found {
		parts := strings.SplitN(rest, ":", 3)
		if len(parts) != 3 {
			return true, errors.BadRequest("interop.greeter", "want error:<code>:<id>:<detail>, got %q", name)
		}
		code, err := strconv.ParseInt(parts[0], 10, 32)
		if err != nil {
			return true, errors.BadRequest("interop.greeter", "bad code %q", parts[0])
		}
		return true, errors.New(parts[1], parts[2], int32(code))
	}
	if name == "echo" {
		md, _ := metadata.FromContext(ctx)
		echo := Echo{Node: g.node(), Metadata: map[string]string(md)}
		if d, ok := ctx.Deadline(); ok {
			ms := time.Until(d).Milliseconds()
			echo.DeadlineMs = &ms
		}
		b, err := json.Marshal(echo)
		if err != nil {
			return true, errors.InternalServerError("interop.greeter", "%v", err)
		}
		rsp.Msg = string(b)
		return true, nil
	}
	return false, nil
}

// Test sleeps, then answers with this node's id.
func (g *Greeter) Test(ctx context.Context, req *pb.Request, rsp *pb.Response) error {
	if g.testSleep > 0 {
		select {
		case <-time.After(g.testSleep):
		case <-ctx.Done():
			return errors.Timeout("interop.greeter", "deadline passed while sleeping: %v", ctx.Err())
		}
	}
	if ok, err := g.special(ctx, req.Name, rsp); ok {
		return err
	}
	rsp.Msg = fmt.Sprintf("test %s from %s", req.Name, g.node())
	return nil
}

// Hello calls the configured service's Greeter.Test and answers with its reply (or, with
// hello_self, answers by itself).
func (g *Greeter) Hello(ctx context.Context, req *pb.Request, rsp *pb.Response) error {
	if g.helloSelf {
		if ok, err := g.special(ctx, req.Name, rsp); ok {
			return err
		}
		rsp.Msg = fmt.Sprintf("hello %s from %s", req.Name, g.node())
		return nil
	}
	reply := &pb.Response{}
	// The context carries the caller's metadata and deadline; go-micro's client passes both on.
	if err := g.client.Call(ctx, g.client.NewRequest(g.call, "Greeter.Test", &pb.Request{Name: req.Name}), reply); err != nil {
		return err
	}
	rsp.Msg = "greeter1 <- " + reply.Msg
	return nil
}

func init() { codecfix.Register() }

// tracerProvider installs the OpenTelemetry SDK as go-micro users set it up: a batch span
// processor exporting over OTLP/gRPC to endpoint, a parent-based trace-id ratio sampler, the
// service's name on the resource. Its Shutdown sends the last spans.
func tracerProvider(ctx context.Context, endpoint, service string, ratio float64) (*sdktrace.TracerProvider, error) {
	exporter, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(endpoint),
		otlptracegrpc.WithInsecure(),
	)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter to %s: %w", endpoint, err)
	}
	res, err := resource.Merge(resource.Default(),
		resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	otel.SetTracerProvider(tp)
	return tp, nil
}

// serveMetrics serves the default Prometheus registry (where go-micro's wrapper registers) on
// address; the listener is bound before returning, so a taken port is an error at start.
func serveMetrics(address string) error {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("metrics listener on %s: %w", address, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	logger.Infof("serving /metrics on %s", listener.Addr())
	go func() {
		if err := http.Serve(listener, mux); err != nil {
			logger.Errorf("metrics listener: %v", err)
		}
	}()
	return nil
}

// tlsConfigs builds go-micro's AuthTLS configurations: the server's (nil without a
// certificate), requiring client certificates signed by ca when one is given, and the
// client's, trusting ca and presenting the certificate.
func tlsConfigs(certFile, keyFile, caFile, serverName string) (*tls.Config, *tls.Config, error) {
	var certs []tls.Certificate
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("tls certificate %s / %s: %w", certFile, keyFile, err)
		}
		certs = []tls.Certificate{cert}
	}
	var pool *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("tls CA %s: %w", caFile, err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("tls CA %s: no certificate", caFile)
		}
	}
	var server *tls.Config
	if certs != nil {
		server = &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12}
		if pool != nil {
			server.ClientCAs = pool
			server.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	client := &tls.Config{Certificates: certs, RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

func main() {
	g := &Greeter{}
	flags := []cli.Flag{
		&cli.StringFlag{Name: "call", EnvVars: []string{"INTEROP_CALL"}, Value: "greeter2",
			Usage: "service whose Greeter.Test Hello calls"},
		&cli.DurationFlag{Name: "test_sleep", EnvVars: []string{"INTEROP_TEST_SLEEP"}, Value: 100 * time.Millisecond,
			Usage: "how long Test sleeps"},
		&cli.BoolFlag{Name: "hello_self", EnvVars: []string{"INTEROP_HELLO_SELF"},
			Usage: "Hello answers by itself"},
		&cli.BoolFlag{Name: "otel", EnvVars: []string{"INTEROP_OTEL"},
			Usage: "wrap with go-micro's OpenTelemetry wrappers (W3C trace context)"},
		&cli.StringFlag{Name: "otel_endpoint", EnvVars: []string{"INTEROP_OTEL_ENDPOINT"},
			Usage: "OTLP/gRPC host:port the SDK sends spans to (implies --otel)"},
		&cli.Float64Flag{Name: "otel_ratio", EnvVars: []string{"INTEROP_OTEL_RATIO"}, Value: 0.9,
			Usage: "share of new traces sampled (parent-based, trace-id ratio)"},
		&cli.StringFlag{Name: "metrics_address", EnvVars: []string{"INTEROP_METRICS_ADDRESS"},
			Usage: "host:port of /metrics; go-micro's Prometheus wrapper on handler and client"},
		&cli.StringFlag{Name: "tls_cert", EnvVars: []string{"INTEROP_TLS_CERT"},
			Usage: "PEM certificate: serve TLS (AuthTLS) and present it as a client"},
		&cli.StringFlag{Name: "tls_key", EnvVars: []string{"INTEROP_TLS_KEY"},
			Usage: "PEM key of --tls_cert"},
		&cli.StringFlag{Name: "tls_ca", EnvVars: []string{"INTEROP_TLS_CA"},
			Usage: "PEM CA bundle: dial every node with TLS; with --tls_cert, require client certificates"},
		&cli.StringFlag{Name: "tls_server_name", EnvVars: []string{"INTEROP_TLS_SERVER_NAME"},
			Usage: "the name expected in servers' certificates"},
	}
	otelOn := false
	otelEndpoint := ""
	otelRatio := 0.9
	metricsAddress := ""
	var tlsCert, tlsKey, tlsCA, tlsServerName string
	opts := []micro.Option{
		micro.Server(grpcserver.NewServer()),
		micro.Client(grpcclient.NewClient()),
		micro.Flags(flags...),
		micro.Action(func(c *cli.Context) error {
			g.call = c.String("call")
			g.testSleep = c.Duration("test_sleep")
			g.helloSelf = c.Bool("hello_self")
			otelEndpoint = c.String("otel_endpoint")
			otelOn = c.Bool("otel") || otelEndpoint != ""
			otelRatio = c.Float64("otel_ratio")
			metricsAddress = c.String("metrics_address")
			tlsCert, tlsKey = c.String("tls_cert"), c.String("tls_key")
			tlsCA, tlsServerName = c.String("tls_ca"), c.String("tls_server_name")
			return nil
		}),
	}
	service := micro.New("greeter", opts...)
	// Parses go-micro's flags and environment (and ours).
	service.Init()
	if otelRatio < 0 || otelRatio > 1 {
		logger.Fatalf("--otel_ratio %v: want a share between 0 and 1", otelRatio)
	}
	if tlsCert != "" || tlsCA != "" {
		serverTLS, clientTLS, err := tlsConfigs(tlsCert, tlsKey, tlsCA, tlsServerName)
		if err != nil {
			logger.Fatal(err)
		}
		if serverTLS != nil {
			if err := service.Server().Init(grpcserver.AuthTLS(serverTLS)); err != nil {
				logger.Fatal(err)
			}
		}
		if err := service.Client().Init(grpcclient.AuthTLS(clientTLS)); err != nil {
			logger.Fatal(err)
		}
	}
	flush := func() {}
	if otelEndpoint != "" {
		tp, err := tracerProvider(context.Background(), otelEndpoint, service.Server().Options().Name, otelRatio)
		if err != nil {
			logger.Fatal(err)
		}
		flush = func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(ctx); err != nil {
				logger.Errorf("sending the last spans: %v", err)
			}
		}
	}
	if metricsAddress != "" {
		if err := serveMetrics(metricsAddress); err != nil {
			logger.Fatal(err)
		}
		// The same series as micro-rs: micro_request_* handled, micro_client_request_* made.
		service.Init(
			micro.WrapHandler(promwrap.NewHandlerWrapper()),
			micro.WrapCall(promwrap.NewCallWrapper(promwrap.ServiceName("micro_client"))),
		)
	}
	if otelOn {
		otel.SetTextMapPropagator(propagation.TraceContext{})
		service.Init(
			micro.WrapHandler(otelwrap.NewHandlerWrapper()),
			micro.WrapCall(otelwrap.NewCallWrapper()),
		)
	}
	g.client = service.Client()
	server := service.Server()
	// The node id go-micro registers: <name>-<id>.
	g.node = func() string { o := server.Options(); return o.Name + "-" + o.Id }
	if err := service.Handle(g); err != nil {
		logger.Fatal(err)
	}
	err := service.Run()
	// After a graceful stop (SIGTERM): the batch's last spans are sent before exiting.
	flush()
	if err != nil {
		logger.Fatal(err)
	}
}
