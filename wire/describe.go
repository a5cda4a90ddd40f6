package wire

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// malformed wraps a decoding failure as ErrMalformed, saying what was wrong
// in the protocol's words (PROTOCOL.md §4): the text travels to the peer in
// an Error frame's message, and a peer written in another language should
// not have to read the reference implementation's decoder messages ("cannot
// unmarshal ... into Go struct field").
func malformed(err error) error {
	return fmt.Errorf("%w: %s", ErrMalformed, describeCBOR(err))
}

// describeCBOR says what a CBOR decoding error found, in terms of §4's
// rules.
func describeCBOR(err error) string {
	var (
		dup    *cbor.DupMapKeyError
		indef  *cbor.IndefiniteLengthError
		tag    *cbor.TagsMdError
		nested *cbor.MaxNestedLevelError
		arr    *cbor.MaxArrayElementsError
		pairs  *cbor.MaxMapPairsError
		extra  *cbor.ExtraneousDataError
		typ    *cbor.UnmarshalTypeError
		syn    *cbor.SyntaxError
		sem    *cbor.SemanticError
		unacc  *cbor.UnacceptableDataItemError
	)
	switch {
	case errors.As(err, &dup):
		return fmt.Sprintf("duplicate map key %v", dup.Key)
	case errors.As(err, &indef):
		return "an indefinite-length item"
	case errors.As(err, &tag):
		return "a tag"
	case errors.As(err, &nested):
		return fmt.Sprintf("arrays and maps nested deeper than %d levels", MaxNesting)
	case errors.As(err, &arr):
		return fmt.Sprintf("an array of more than %d elements", MaxArrayItems)
	case errors.As(err, &pairs):
		return fmt.Sprintf("a map of more than %d pairs", MaxMapPairs)
	case errors.As(err, &extra):
		return "bytes after the item"
	case errors.As(err, &unacc):
		return "a simple value other than false, true, null and undefined"
	case errors.As(err, &typ):
		return describeType(typ)
	case errors.As(err, &syn):
		return strings.TrimPrefix(syn.Error(), "cbor: ")
	case errors.As(err, &sem):
		return strings.TrimPrefix(sem.Error(), "cbor: ")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the item ends early"
	}
	// Errors of this package's own decoders (fixed-size byte strings...)
	// are phrased for the protocol already.
	return strings.TrimPrefix(err.Error(), "cbor: ")
}

// describeType says which field held a value of the wrong type. The
// decoder names the field "Type.KEY" (our fields are keyed by integers),
// and the Go type it wanted, which is mapped to the protocol's type.
func describeType(e *cbor.UnmarshalTypeError) string {
	got := cborTypeName(e.CBORType)
	if strings.Contains(e.Error(), "map key") {
		return fmt.Sprintf("a map key that is %s; keys are unsigned integers", got)
	}
	if e.StructFieldName == "" && e.GoType == "int64" && strings.Contains(e.Error(), "overflows") {
		// An integer map key is read as a 64-bit signed one, known or not.
		return fmt.Sprintf("a map key that is %s outside -2^63..2^63-1", got)
	}
	want := protocolType(e.GoType)
	field := "a value"
	if i := strings.LastIndexByte(e.StructFieldName, '.'); i >= 0 {
		field = "field " + e.StructFieldName[i+1:]
	}
	if strings.HasSuffix(got, "integer") && strings.HasSuffix(want, "integer") {
		return fmt.Sprintf("%s: %s out of range", field, strings.TrimPrefix(strings.TrimPrefix(got, "an "), "a "))
	}
	return fmt.Sprintf("%s is %s, want %s", field, got, want)
}

// cborTypeName turns the decoder's name of a CBOR type into the protocol's.
func cborTypeName(t string) string {
	switch t {
	case "positive integer":
		return "an unsigned integer"
	case "negative integer":
		return "a negative integer"
	case "byte string":
		return "a byte string"
	case "UTF-8 text string":
		return "a text string"
	case "array":
		return "an array"
	case "map":
		return "a map"
	case "primitives":
		// Major type 7: null and undefined are absent fields, and other
		// simple values are refused before (unassignedSimpleValues), so
		// what is left is a boolean or a float (a float was named a simple
		// value (true, false, null, undefined) until session 22).
		return "a boolean or a float"
	case "float", "floating-point number":
		return "a float"
	case "tag":
		return "a tag"
	}
	return "a " + t
}

// protocolType turns a Go type the decoder wanted into the protocol's name
// for the values it accepts (§6).
func protocolType(goType string) string {
	switch {
	case goType == "bool":
		return "a boolean"
	case goType == "string":
		return "a text string"
	case strings.HasPrefix(goType, "uint"):
		return "an unsigned integer"
	case strings.HasPrefix(goType, "int"):
		return "an integer"
	case strings.HasSuffix(goType, "UUID"):
		return "a 16-byte byte string"
	case goType == "[]uint8":
		return "a byte string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.HasPrefix(goType, "["):
		return "a byte string of fixed length"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "wire."), strings.HasPrefix(goType, "struct"):
		return "a map"
	}
	return "another type"
}
