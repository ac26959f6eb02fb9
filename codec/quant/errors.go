package quant

import (
	"errors"
	"fmt"
	"strings"
)

// Error classes; every error this package returns wraps one of them, so
// callers can tell "heft cannot read this (yet)" from "this checkpoint is
// broken" with errors.Is.
var (
	// ErrUnsupported: a quantization method, format, scheme or dtype that
	// this package recognises but does not decode.
	ErrUnsupported = errors.New("quant: unsupported")
	// ErrInvalid: config.json or the tensors contradict the format (a
	// missing or misshapen tensor, a wrong dtype, a malformed config field,
	// data of the wrong length, an out-of-range index).
	ErrInvalid = errors.New("quant: invalid")
	// ErrNonFinite: a weight to quantize holds NaN or ±Inf, which no scale
	// can represent. It wraps ErrInvalid.
	ErrNonFinite = fmt.Errorf("%w: non-finite weight", ErrInvalid)
)

// Error describes what is wrong and where: Tensor names the tensor (or, for
// module-level problems, the module prefix), Field the config field or tensor
// attribute.
type Error struct {
	Tensor string // tensor or module name; empty for config-level errors
	Field  string // e.g. "shape", "dtype", "quantization_config.config_groups.group_0.weights.group_size"
	Reason string
	Err    error // ErrUnsupported or ErrInvalid
}

// maxNameInMessage bounds how much of a (possibly hostile) name a message
// repeats; the full name stays in Error.Tensor.
const maxNameInMessage = 200

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("quant: ")
	if e.Tensor != "" {
		b.WriteString(shorten(e.Tensor))
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(shorten(e.Field))
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns the error class.
func (e *Error) Unwrap() error { return e.Err }

func shorten(s string) string {
	if len(s) <= maxNameInMessage {
		return s
	}
	return s[:maxNameInMessage] + "…"
}

func invalidf(tensor, field, format string, args ...any) error {
	return &Error{Tensor: tensor, Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrInvalid}
}

func unsupportedf(tensor, field, format string, args ...any) error {
	return &Error{Tensor: tensor, Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}
