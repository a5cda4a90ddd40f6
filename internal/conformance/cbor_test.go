package conformance

// The CBOR subset of PROTOCOL.md §4 and §6, encoded and decoded by the
// rules there: definite lengths only, no tags, no floats, maps keyed by
// unsigned integers, valid UTF-8, at most 8 levels of nesting, 8192 array
// elements and 32 map pairs (checked on the declared count), and nothing
// after the one item. Values decode to:
//
//	major 0  uint64
//	major 1  int64 (a value below -2^63 fits no field: refused)
//	major 2  []byte
//	major 3  string
//	major 4  []any
//	major 5  cmap
//	major 7  bool (true, false); null and undefined are refused, since
//	         §4 says encoders MUST NOT send them

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"
)

// cmap is a CBOR map with unsigned-integer keys, the only kind §5 uses.
type cmap map[uint64]any

// Limits of §4 and §10.
const (
	maxDepth    = 8
	maxArray    = 8192
	maxMapPairs = 32
)

var errMalformed = errors.New("malformed CBOR")

// decodeItem decodes exactly one item that fills b.
func decodeItem(b []byte) (any, error) {
	d := decoder{b: b}
	v, err := d.item(1)
	if err != nil {
		return nil, err
	}
	if d.off != len(b) {
		return nil, fmt.Errorf("%w: %d bytes after the item", errMalformed, len(b)-d.off)
	}
	return v, nil
}

type decoder struct {
	b   []byte
	off int
}

// head reads an item's initial byte and argument.
func (d *decoder) head() (major byte, arg uint64, err error) {
	if d.off >= len(d.b) {
		return 0, 0, fmt.Errorf("%w: truncated", errMalformed)
	}
	ib := d.b[d.off]
	d.off++
	major, ai := ib>>5, ib&0x1f
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai), nil
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	case ai == 31:
		return 0, 0, fmt.Errorf("%w: indefinite length (major type %d)", errMalformed, major)
	default:
		return 0, 0, fmt.Errorf("%w: reserved additional information %d", errMalformed, ai)
	}
	if len(d.b)-d.off < n {
		return 0, 0, fmt.Errorf("%w: truncated", errMalformed)
	}
	for _, c := range d.b[d.off : d.off+n] {
		arg = arg<<8 | uint64(c)
	}
	d.off += n
	if major == 7 && n > 1 {
		return 0, 0, fmt.Errorf("%w: a float", errMalformed)
	}
	return major, arg, nil
}

func (d *decoder) item(depth int) (any, error) {
	major, arg, err := d.head()
	if err != nil {
		return nil, err
	}
	switch major {
	case 0:
		return arg, nil
	case 1:
		if arg > math.MaxInt64 {
			return nil, fmt.Errorf("%w: negative integer below -2^63", errMalformed)
		}
		return -1 - int64(arg), nil
	case 2, 3:
		if arg > uint64(len(d.b)-d.off) {
			return nil, fmt.Errorf("%w: string of %d bytes, %d left", errMalformed, arg, len(d.b)-d.off)
		}
		s := d.b[d.off : d.off+int(arg)]
		d.off += int(arg)
		if major == 2 {
			return slices.Clone(s), nil
		}
		if !utf8.Valid(s) {
			return nil, fmt.Errorf("%w: text string not UTF-8", errMalformed)
		}
		return string(s), nil
	case 4:
		if depth > maxDepth {
			return nil, fmt.Errorf("%w: nested deeper than %d", errMalformed, maxDepth)
		}
		if arg > maxArray {
			return nil, fmt.Errorf("%w: array of %d elements", errMalformed, arg)
		}
		a := make([]any, 0, arg)
		for range arg {
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case 5:
		if depth > maxDepth {
			return nil, fmt.Errorf("%w: nested deeper than %d", errMalformed, maxDepth)
		}
		if arg > maxMapPairs {
			return nil, fmt.Errorf("%w: map of %d pairs", errMalformed, arg)
		}
		m := make(cmap, arg)
		for range arg {
			k, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			key, ok := k.(uint64)
			if !ok {
				return nil, fmt.Errorf("%w: map key %T, want an unsigned integer", errMalformed, k)
			}
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("%w: duplicate map key %d", errMalformed, key)
			}
			v, err := d.item(depth + 1)
			if err != nil {
				return nil, err
			}
			m[key] = v
		}
		return m, nil
	case 6:
		return nil, fmt.Errorf("%w: tag %d", errMalformed, arg)
	default: // 7
		switch arg {
		case 20:
			return false, nil
		case 21:
			return true, nil
		default:
			return nil, fmt.Errorf("%w: simple value %d (null, undefined or other)", errMalformed, arg)
		}
	}
}

// encodeItem encodes v deterministically (RFC 8949 §4.2.1): shortest
// arguments, map keys ascending. It takes the decoder's types and also int
// and uint.
func encodeItem(v any) []byte {
	return appendItem(nil, v)
}

func appendHead(b []byte, major byte, arg uint64) []byte {
	m := major << 5
	switch {
	case arg < 24:
		return append(b, m|byte(arg))
	case arg <= math.MaxUint8:
		return append(b, m|24, byte(arg))
	case arg <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(arg))
	case arg <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(arg))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|27), arg)
	}
}

func appendItem(b []byte, v any) []byte {
	switch v := v.(type) {
	case uint64:
		return appendHead(b, 0, v)
	case uint:
		return appendHead(b, 0, uint64(v))
	case int:
		return appendItem(b, int64(v))
	case int64:
		if v >= 0 {
			return appendHead(b, 0, uint64(v))
		}
		return appendHead(b, 1, uint64(-1-v))
	case []byte:
		return append(appendHead(b, 2, uint64(len(v))), v...)
	case string:
		return append(appendHead(b, 3, uint64(len(v))), v...)
	case []any:
		b = appendHead(b, 4, uint64(len(v)))
		for _, e := range v {
			b = appendItem(b, e)
		}
		return b
	case cmap:
		b = appendHead(b, 5, uint64(len(v)))
		keys := make([]uint64, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = appendItem(appendHead(b, 0, k), v[k])
		}
		return b
	case bool:
		if v {
			return append(b, 0xf5)
		}
		return append(b, 0xf4)
	default:
		panic(fmt.Sprintf("conformance: cannot encode %T", v))
	}
}

// Field access with §4's type rules: a field of the wrong type is a
// malformed reply. An absent field is the zero value (§6).

type fieldError struct {
	key  uint64
	want string
	got  any
}

func (e *fieldError) Error() string {
	return fmt.Sprintf("field %d: got %T, want %s", e.key, e.got, e.want)
}

func (m cmap) uint(k uint64) (uint64, error) {
	v, ok := m[k]
	if !ok {
		return 0, nil
	}
	u, ok := v.(uint64)
	if !ok {
		return 0, &fieldError{k, "uint", v}
	}
	return u, nil
}

func (m cmap) int(k uint64) (int64, error) {
	switch v := m[k].(type) {
	case nil:
		return 0, nil
	case int64:
		return v, nil
	case uint64:
		if v > math.MaxInt64 {
			return 0, &fieldError{k, "int below 2^63", v}
		}
		return int64(v), nil
	default:
		return 0, &fieldError{k, "int", v}
	}
}

func (m cmap) bool(k uint64) (bool, error) {
	v, ok := m[k]
	if !ok {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, &fieldError{k, "bool", v}
	}
	return b, nil
}

func (m cmap) text(k uint64) (string, error) {
	v, ok := m[k]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", &fieldError{k, "text", v}
	}
	return s, nil
}

// bytes reads a byte string; n > 0 requires exactly n bytes when present.
func (m cmap) bytes(k uint64, n int) ([]byte, error) {
	v, ok := m[k]
	if !ok {
		return nil, nil
	}
	b, ok := v.([]byte)
	if !ok || n > 0 && len(b) != n {
		return nil, &fieldError{k, fmt.Sprintf("bytes(%d)", n), v}
	}
	return b, nil
}

func (m cmap) array(k uint64) ([]any, error) {
	v, ok := m[k]
	if !ok {
		return nil, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, &fieldError{k, "array", v}
	}
	return a, nil
}

func (m cmap) cmap(k uint64) (cmap, error) {
	v, ok := m[k]
	if !ok {
		return cmap{}, nil
	}
	c, ok := v.(cmap)
	if !ok {
		return nil, &fieldError{k, "map", v}
	}
	return c, nil
}

// maps reads an array of maps.
func (m cmap) maps(k uint64) ([]cmap, error) {
	a, err := m.array(k)
	if err != nil {
		return nil, err
	}
	out := make([]cmap, len(a))
	for i, e := range a {
		c, ok := e.(cmap)
		if !ok {
			return nil, &fieldError{k, "array of maps", e}
		}
		out[i] = c
	}
	return out, nil
}

// reader gathers the first error of a run of field reads, so that a
// decoder of one reply reads as a list of its fields.
type reader struct {
	m   cmap
	err error
}

func (r *reader) keep(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) uint(k uint64) uint64 { v, err := r.m.uint(k); r.keep(err); return v }
func (r *reader) int(k uint64) int64   { v, err := r.m.int(k); r.keep(err); return v }
func (r *reader) bool(k uint64) bool   { v, err := r.m.bool(k); r.keep(err); return v }
func (r *reader) text(k uint64) string { v, err := r.m.text(k); r.keep(err); return v }
func (r *reader) bytes(k uint64, n int) []byte {
	v, err := r.m.bytes(k, n)
	r.keep(err)
	return v
}
func (r *reader) cmap(k uint64) cmap   { v, err := r.m.cmap(k); r.keep(err); return v }
func (r *reader) maps(k uint64) []cmap { v, err := r.m.maps(k); r.keep(err); return v }
func (r *reader) array(k uint64) []any { v, err := r.m.array(k); r.keep(err); return v }
