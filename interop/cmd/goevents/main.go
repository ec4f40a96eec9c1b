// Command goevents publishes or consumes go-micro events (greeter.Response on a topic) through
// go-micro's NATS broker, with go-micro's gRPC client and server and its OpenTelemetry
// wrappers (W3C trace context), for micro-rs's event interop tests and benchmark.
//
// Configured by go-micro's own environment (MICRO_BROKER=nats, MICRO_BROKER_ADDRESS,
// MICRO_REGISTRY, MICRO_SERVER_ADDRESS, ...) plus:
//
//	GOEVENTS_MODE    pub or sub
//	GOEVENTS_TOPIC   the topic (greeter.events)
//	GOEVENTS_COUNT   pub: how many messages (msg "go <n>"), each in a trace of its own, with
//	                 the metadata X-User=gopher; prints {"n":n,"trace_id":".."} per message
//	GOEVENTS_QUEUE   sub: queue group (none: every message)
//	GOEVENTS_QUIET   the bench: no OpenTelemetry wrappers, nothing printed per message; pub prints {"published":n,"cpu_ms":..}
//	                 at the end; sub prints {"received":n,"cpu_ms":..} once it has
//	                 GOEVENTS_EXPECT messages, and on SIGTERM
//	GOEVENTS_EXPECT  sub: how many messages make the bench's run complete
//
// sub prints {"ready":true} once subscribed, then per message one JSON line: the message,
// the metadata the handler saw and the trace id of its "Sub from" span.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"

	"go-micro.dev/v5"
	grpcclient "go-micro.dev/v5/client/grpc"
	"go-micro.dev/v5/logger"
	"go-micro.dev/v5/metadata"
	"go-micro.dev/v5/server"
	grpcserver "go-micro.dev/v5/server/grpc"
	otelwrap "go-micro.dev/v5/wrapper/trace/opentelemetry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	pb "github.com/micro-rs/micro-rs/interop/greeterpb"
	"github.com/micro-rs/micro-rs/interop/internal/codecfix"
)

func init() { codecfix.Register() }

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		logger.Fatal(err)
	}
	fmt.Println(string(b))
}

// cpuMillis is this process's user + system CPU time so far, in ms.
func cpuMillis() int64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		logger.Fatal(err)
	}
	return usage.Utime.Nano()/1e6 + usage.Stime.Nano()/1e6
}

func main() {
	mode := os.Getenv("GOEVENTS_MODE")
	topic := os.Getenv("GOEVENTS_TOPIC")
	if topic == "" {
		topic = "greeter.events"
	}
	// Spans are recorded (always sampled) but not exported: the trace ids are what is checked.
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())))
	otel.SetTextMapPropagator(propagation.TraceContext{})

	service := micro.New("goevents-"+mode,
		micro.Server(grpcserver.NewServer()),
		micro.Client(grpcclient.NewClient()),
	)
	// Parses go-micro's flags and environment (MICRO_BROKER, ...).
	service.Init()
	// The bench (GOEVENTS_QUIET) measures plain go-micro, as micro-rs's side runs untraced.
	if os.Getenv("GOEVENTS_QUIET") == "" {
		service.Init(
			micro.WrapClient(otelwrap.NewClientWrapper()),
			micro.WrapSubscriber(otelwrap.NewSubscriberWrapper()),
		)
	}

	switch mode {
	case "pub":
		count, err := strconv.Atoi(os.Getenv("GOEVENTS_COUNT"))
		if err != nil {
			logger.Fatalf("GOEVENTS_COUNT: %v", err)
		}
		event := micro.NewEvent(topic, service.Client())
		tracer := otel.Tracer("goevents")
		quiet := os.Getenv("GOEVENTS_QUIET") != ""
		for n := 0; n < count; n++ {
			ctx := metadata.NewContext(context.Background(), metadata.Metadata{"X-User": "gopher"})
			ctx, span := tracer.Start(ctx, "goevents publish")
			if err := event.Publish(ctx, &pb.Response{Msg: fmt.Sprintf("go %d", n)}); err != nil {
				logger.Fatalf("publish %d: %v", n, err)
			}
			if !quiet {
				emit(map[string]any{"n": n, "trace_id": span.SpanContext().TraceID().String()})
			}
			span.End()
		}
		// go-micro's NATS publish is buffered by nats.go: closing the connection sends the rest.
		if err := service.Options().Broker.Disconnect(); err != nil {
			logger.Fatalf("disconnect: %v", err)
		}
		if quiet {
			emit(map[string]int64{"published": int64(count), "cpu_ms": cpuMillis()})
		}
	case "sub":
		quiet := os.Getenv("GOEVENTS_QUIET") != ""
		expect, _ := strconv.ParseInt(os.Getenv("GOEVENTS_EXPECT"), 10, 64)
		var received atomic.Int64
		handler := func(ctx context.Context, msg *pb.Response) error {
			if n := received.Add(1); n == expect {
				emit(map[string]int64{"received": n, "cpu_ms": cpuMillis()})
			}
			if quiet {
				return nil
			}
			md, _ := metadata.FromContext(ctx)
			emit(map[string]any{
				"msg":      msg.Msg,
				"metadata": map[string]string(md),
				"trace_id": trace.SpanContextFromContext(ctx).TraceID().String(),
			})
			return nil
		}
		var opts []server.SubscriberOption
		if queue := os.Getenv("GOEVENTS_QUEUE"); queue != "" {
			opts = append(opts, server.SubscriberQueue(queue))
		}
		if err := micro.RegisterSubscriber(topic, service.Server(), handler, opts...); err != nil {
			logger.Fatal(err)
		}
		service.Init(
			micro.AfterStart(func() error { emit(map[string]bool{"ready": true}); return nil }),
			micro.AfterStop(func() error {
				emit(map[string]int64{"received": received.Load(), "cpu_ms": cpuMillis()})
				return nil
			}),
		)
		if err := service.Run(); err != nil {
			logger.Fatal(err)
		}
	default:
		logger.Fatalf("GOEVENTS_MODE %q: want pub or sub", mode)
	}
}
