package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"
)

// The fence around the hand-written codecs (sendcodec.go, messages.go).
//
// appendSend, appendSent and appendMessages write their structs field by
// field, and decodeSend, decodeSent and MessagesDecoder read them back the
// same way. The other tests compare them with the reflective codec on
// values written by hand, which leave a field added later at its zero
// value: with omitempty it is not encoded by either side, and a round trip
// drops it while every test stays green. The tests here fill every field of
// every struct a fast path carries, whatever it is, with a value that is not
// zero, so a field a fast path does not carry fails them; and a field of a
// kind fill does not know fails them too, so that the fence is extended
// rather than skipped.

// fastPathFrames are the frames written and read without reflection: each
// type, the frame type it is fast under, and whether Frame.Decode reads it
// by hand (decodeCanonical) or MessagesDecoder does.
var fastPathFrames = []struct {
	typ      uint64
	body     any // a pointer to a zero value of the frame type
	messages bool
}{
	{uint64(OpSend), &Send{}, false},
	{uint64(KindResult), &Sent{}, false},
	{uint64(KindMessages), &Messages{}, true},
}

// filler fills values with distinct values that are not zero.
type filler struct{ n uint64 }

func (f *filler) next() uint64 { f.n++; return f.n }

// fill sets every field of v, recursively, to a value that is not zero: two
// elements per slice, so that a field written for the first element only is
// caught too. It fails for a kind it does not know.
func (f *filler) fill(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				t.Fatalf("%s.%s: an unexported field in a wire struct: extend the fence", path, v.Type().Field(i).Name)
			}
			f.fill(t, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case reflect.Array:
		for i := range v.Len() {
			f.fill(t, fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes(fmt.Appendf(nil, "body %d", f.next()))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			f.fill(t, fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	case reflect.Uint8:
		v.SetUint(f.next()%255 + 1)
	case reflect.Uint16, reflect.Uint32, reflect.Uint64:
		// Large enough to need a multi-byte head, distinct per field.
		v.SetUint(1<<33 + f.next())
	case reflect.Int64:
		v.SetInt(-(1<<40 + int64(f.next())))
	case reflect.String:
		v.SetString(fmt.Sprintf("name %d", f.next()))
	case reflect.Bool:
		v.SetBool(true)
	default:
		t.Fatalf("%s: fill does not know a %v: extend the fence for this field", path, v.Type())
	}
}

// filled returns a new value of body's type with every field filled.
func filled(t *testing.T, body any) any {
	t.Helper()
	v := reflect.New(reflect.TypeOf(body).Elem())
	(&filler{}).fill(t, v.Type().Elem().Name(), v.Elem())
	return v.Interface()
}

// TestFastPathsCarryEveryField holds each fast path to the reflective codec
// on values with every field set: the encoder byte for byte, the decoder to
// the same value, and the decoder must take what the encoder writes (a
// fast decoder that stopped taking it would silently fall back).
func TestFastPathsCarryEveryField(t *testing.T) {
	for _, fp := range fastPathFrames {
		name := reflect.TypeOf(fp.body).Elem().Name()
		t.Run(name, func(t *testing.T) {
			v := filled(t, fp.body)
			item, err := encMode.Marshal(envelope{Type: fp.typ, Body: v})
			if err != nil {
				t.Fatal(err)
			}
			want := binary.BigEndian.AppendUint32(nil, uint32(len(item)))
			want = append(want, item...)
			got, err := AppendFrame(nil, fp.typ, v)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("the fast encoder of %s does not write every field:\n got %x\nwant %x", name, got, want)
			}

			f, err := SplitFrame(want[4:])
			if err != nil {
				t.Fatal(err)
			}
			out := reflect.New(reflect.TypeOf(fp.body).Elem()).Interface()
			if fp.messages {
				var d MessagesDecoder
				ms, ok := d.decodeByHand(f.body, nil)
				if !ok {
					t.Fatalf("MessagesDecoder does not read by hand what appendMessages writes")
				}
				out = &Messages{Messages: ms}
			} else {
				if !decodeCanonical(f.body, out) {
					t.Fatalf("the fast decoder of %s does not take what its encoder writes", name)
				}
				if err := checkFields(out); err != nil {
					t.Fatalf("the filled %s fails its checks: %v", name, err)
				}
			}
			if !reflect.DeepEqual(out, v) {
				t.Fatalf("the fast decoder of %s drops a field:\n got %+v\nwant %+v", name, out, v)
			}
			// And through the public path, as a peer's frame arrives.
			var pub any = reflect.New(reflect.TypeOf(fp.body).Elem()).Interface()
			if fp.messages {
				var d MessagesDecoder
				ms, err := d.Decode(f, nil)
				if err != nil {
					t.Fatal(err)
				}
				pub = &Messages{Messages: ms}
			} else if err := f.Decode(pub); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pub, v) {
				t.Fatalf("%s after a round trip:\n got %+v\nwant %+v", name, pub, v)
			}
		})
	}
}

// TestFillerCatchesADroppedField proves the fence can fail: filled, an
// Outgoing with one more field (omitempty, the trap) encodes differently
// from the Outgoing appendSend would write with the fields it knows.
func TestFillerCatchesADroppedField(t *testing.T) {
	type outgoingPlus struct {
		ID    ID     `cbor:"1,keyasint"`
		Body  []byte `cbor:"2,keyasint"`
		Extra uint64 `cbor:"3,keyasint,omitempty"`
	}
	v := filled(t, &outgoingPlus{}).(*outgoingPlus)
	plus, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	known, err := encMode.Marshal(Outgoing{ID: v.ID, Body: v.Body})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(plus, known) {
		t.Fatalf("fill left the added field zero: %x", plus)
	}
}

// TestMessageInMirrorsMessage keeps messageIn, the form MessagesDecoder
// decodes a Message into by reflection, in step with Message: the same
// fields under the same keys.
func TestMessageInMirrorsMessage(t *testing.T) {
	m, in := reflect.TypeFor[Message](), reflect.TypeFor[messageIn]()
	if m.NumField() != in.NumField() {
		t.Fatalf("Message has %d fields, messageIn %d: carry the new field in MessagesDecoder", m.NumField(), in.NumField())
	}
	for i := range m.NumField() {
		a, b := m.Field(i), in.Field(i)
		if a.Name != b.Name || a.Tag != b.Tag {
			t.Errorf("field %d: Message has %s %q, messageIn %s %q", i, a.Name, a.Tag, b.Name, b.Tag)
		}
	}
}
