package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// checkStrict checks, everywhere in item, the rules of PROTOCOL.md §4 that
// the decoder applies only to the values it decodes into fields: every text
// string, map keys included, is valid UTF-8; every map key is an unsigned
// or negative integer or a text string; and no map has the same key twice
// (an integer key compares by value, so 5 and its longer encoding 18 05
// are the same key). The decoder skips the values of keys it does not
// know without looking inside them, so without this walk a duplicate key
// or invalid text under an unknown key would be accepted.
//
// item must already be well-formed as the strict decoder sees it (definite
// lengths, no tags, nesting and counts within the limits): checkStrict runs
// after a successful decode. It still never reads out of bounds, and
// reports anything unexpected as malformed.
func checkStrict(item []byte) error {
	end, err := strictItem(item, 0, 0)
	if err != nil {
		return err
	}
	if end != len(item) {
		return errors.New("bytes after the item")
	}
	return nil
}

// errStrictTruncated is an item that ends inside a value: the decoder has
// rejected it before checkStrict could see it, so it is unexpected here.
var errStrictTruncated = errors.New("item ends inside a value")

// strictKey is a map key as checkStrict compares them.
type strictKey struct {
	major byte // 0, 1 or 3
	v     uint64
	text  []byte
}

// strictItem checks the item at b[i:] and returns the index after it.
func strictItem(b []byte, i, depth int) (int, error) {
	if depth > MaxNesting {
		return 0, fmt.Errorf("nested more than %d levels", MaxNesting)
	}
	major, v, next, err := strictHead(b, i)
	if err != nil {
		return 0, err
	}
	switch major {
	case 0, 1, 7: // integers, and simple values and floats: the head is all
		return next, nil
	case 2, 3:
		end := next + int(v)
		if v > uint64(len(b)-next) {
			return 0, errStrictTruncated
		}
		if major == 3 && !utf8.Valid(b[next:end]) {
			return 0, errors.New("text string is not valid UTF-8")
		}
		return end, nil
	case 4:
		if v > MaxArrayItems {
			return 0, fmt.Errorf("array of %d elements", v)
		}
		for range v {
			if next, err = strictItem(b, next, depth+1); err != nil {
				return 0, err
			}
		}
		return next, nil
	case 5:
		if v > MaxMapPairs {
			return 0, fmt.Errorf("map of %d pairs", v)
		}
		var keys [MaxMapPairs]strictKey
		for k := range int(v) {
			kmajor, kv, kend, err := strictHead(b, next)
			if err != nil {
				return 0, err
			}
			key := strictKey{major: kmajor, v: kv}
			switch kmajor {
			case 0, 1:
			case 3:
				if kend, err = strictItem(b, next, depth+1); err != nil {
					return 0, err
				}
				key.text = b[kend-int(kv) : kend]
			default:
				return 0, fmt.Errorf("a map key of major type %d: keys are integers or text strings", kmajor)
			}
			for _, seen := range keys[:k] {
				if seen.major == key.major && seen.v == key.v && string(seen.text) == string(key.text) {
					return 0, errors.New("duplicate map key")
				}
			}
			keys[k] = key
			if next, err = strictItem(b, kend, depth+1); err != nil {
				return 0, err
			}
		}
		return next, nil
	}
	return 0, fmt.Errorf("major type %d (a tag)", major)
}

// strictHead reads the head of the item at b[i:]: its major type, its
// argument (a length, a count or an integer's value; for major type 7, 0)
// and the index after the head. Indefinite lengths and reserved additional
// information are errors.
func strictHead(b []byte, i int) (major byte, v uint64, next int, err error) {
	if i >= len(b) {
		return 0, 0, 0, errStrictTruncated
	}
	major, ai := b[i]>>5, b[i]&0x1f
	i++
	n := 0
	switch {
	case ai < 24:
		return major, uint64(ai), i, nil
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	default:
		return 0, 0, 0, errors.New("indefinite length or reserved additional information")
	}
	if len(b)-i < n {
		return 0, 0, 0, errStrictTruncated
	}
	switch n {
	case 1:
		v = uint64(b[i])
	case 2:
		v = uint64(binary.BigEndian.Uint16(b[i:]))
	case 4:
		v = uint64(binary.BigEndian.Uint32(b[i:]))
	case 8:
		v = binary.BigEndian.Uint64(b[i:])
	}
	if major == 7 {
		v = 0 // a float's bits or a simple value: not a length
	}
	return major, v, i + n, nil
}
