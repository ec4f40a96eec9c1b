// Package codecfix works around a go-micro v5.30 bug: server/grpc registers, in its init, a
// global gRPC "proto" codec that only marshals protobuf-go v2 messages, and since Go runs
// client/grpc's init before server/grpc's, that codec wins. etcd's client (go.etcd.io/etcd
// v3.5, gogo-generated v1 messages) then fails every call with "grpc: error while
// marshaling: invalid message", so a go-micro gRPC server cannot register in etcd.
//
// Importing this package (from package main, whose init runs last) registers a codec that
// takes v1 and v2 messages and go-micro's bytes.Frame, as go-micro's client/grpc codec does.
package codecfix

import (
	"fmt"

	"go-micro.dev/v5/codec/bytes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *bytes.Frame:
		return m.Data, nil
	case proto.Message:
		return proto.Marshal(m)
	case protoadapt.MessageV1:
		return proto.Marshal(protoadapt.MessageV2Of(m))
	}
	return nil, fmt.Errorf("codecfix: cannot marshal %T", v)
}

func (codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *bytes.Frame:
		m.Data = data
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	case protoadapt.MessageV1:
		return proto.Unmarshal(data, protoadapt.MessageV2Of(m))
	}
	return fmt.Errorf("codecfix: cannot unmarshal into %T", v)
}

// Register installs the codec; call it from main's init.
func Register() { encoding.RegisterCodec(codec{}) }
