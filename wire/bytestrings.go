package wire

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// checkByteStrings checks that every field of v's type that holds bytes
// ([]byte, or an array of bytes such as a UUID) was a byte string in body,
// the item v was decoded from: the decoder fills such a field from an
// array of small integers too (group: [17, 17, ...] was a UUID, an array
// of 32 of them cut to 16; a secret [104, 105] was h'6869'), which
// PROTOCOL.md §4 makes a value of the wrong type, malformed. Until
// session 22 they were read. Fields whose types decode themselves (ID,
// Fingerprint) check their own. null and undefined are absent fields, as
// the decoder reads them. body decoded into v without error.
func checkByteStrings(body []byte, v any) error {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || len(body) == 0 {
		return nil
	}
	_, err := walkBytes(body, 0, planOf(t))
	return err
}

// bytesPlan says, by map key, which fields of a struct hold bytes, and
// which hold structs (or slices of them) that may.
type bytesPlan struct {
	fields map[uint64]bytesField
}

type bytesField struct {
	bytes bool       // the field holds bytes: a byte string is wanted
	sub   *bytesPlan // the field is a struct, or a slice or array of structs
	many  bool       // sub is an element's plan (a slice or array)
}

var bytesPlans sync.Map // reflect.Type -> *bytesPlan

// planOf returns t's plan, nil if no field of t, at any depth, holds bytes.
// Plans are built once per type and shared.
func planOf(t reflect.Type) *bytesPlan {
	if p, ok := bytesPlans.Load(t); ok {
		return p.(*bytesPlan)
	}
	p, _ := bytesPlans.LoadOrStore(t, buildPlan(t, 0))
	return p.(*bytesPlan)
}

// buildPlan builds t's plan, following its fields at most MaxNesting deep
// (no frame nests deeper, and no type of this package holds itself).
func buildPlan(t reflect.Type, depth int) *bytesPlan {
	if depth > MaxNesting {
		return nil
	}
	p := &bytesPlan{fields: map[uint64]bytesField{}}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("cbor")
		name, _, _ := strings.Cut(tag, ",")
		key, err := strconv.ParseUint(name, 10, 64)
		if err != nil || !strings.Contains(tag, "keyasint") {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if reflect.PointerTo(ft).Implements(unmarshalerType) {
			continue // it checks its own encoding
		}
		switch {
		case (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array) && ft.Elem().Kind() == reflect.Uint8:
			p.fields[key] = bytesField{bytes: true}
		case ft.Kind() == reflect.Struct:
			if sub := buildPlan(ft, depth+1); sub != nil {
				p.fields[key] = bytesField{sub: sub}
			}
		case (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Array) && ft.Elem().Kind() == reflect.Struct:
			if sub := buildPlan(ft.Elem(), depth+1); sub != nil {
				p.fields[key] = bytesField{sub: sub, many: true}
			}
		}
	}
	if len(p.fields) == 0 {
		return nil
	}
	return p
}

var unmarshalerType = reflect.TypeFor[interface{ UnmarshalCBOR([]byte) error }]()

// walkBytes checks the map at b[i:] against plan and returns the index
// after it. b is well-formed (it decoded), so a head that is not what plan
// expects of a struct (not a map) is skipped: the decoder accepted it as
// absent (null, undefined).
func walkBytes(b []byte, i int, plan *bytesPlan) (int, error) {
	major, n, next, err := strictHead(b, i)
	if err != nil {
		return 0, err
	}
	if major != 5 || plan == nil {
		return strictItem(b, i, 0)
	}
	for range n {
		kmajor, key, _, err := strictHead(b, next)
		if err != nil {
			return 0, err
		}
		if next, err = strictItem(b, next, 0); err != nil { // the key
			return 0, err
		}
		f, ok := plan.fields[key]
		if kmajor != 0 || !ok {
			if next, err = strictItem(b, next, 0); err != nil {
				return 0, err
			}
			continue
		}
		vmajor, count, vnext, err := strictHead(b, next)
		if err != nil {
			return 0, err
		}
		switch {
		case f.bytes:
			if vmajor != 2 && b[next] != cborNull && b[next] != cborUndefined {
				return 0, fmt.Errorf("field %d is %s, want a byte string", key, majorName(vmajor))
			}
			next, err = strictItem(b, next, 0)
		case !f.many:
			next, err = walkBytes(b, next, f.sub)
		case vmajor == 4:
			next = vnext
			for range count {
				if next, err = walkBytes(b, next, f.sub); err != nil {
					return 0, err
				}
			}
		default:
			next, err = strictItem(b, next, 0)
		}
		if err != nil {
			return 0, err
		}
	}
	return next, nil
}

// majorName names a CBOR major type as §4's messages do.
func majorName(major byte) string {
	return [8]string{"an unsigned integer", "a negative integer", "a byte string", "a text string",
		"an array", "a map", "a tag", "a boolean or a float"}[major]
}
