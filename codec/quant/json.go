package quant

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
)

// jsonObject is a config object whose members are decoded on demand, so that
// each field's type can be checked (and named in errors) one at a time, and
// unknown fields are ignored as Python's loaders ignore them.
type jsonObject struct {
	path string // e.g. "quantization_config.config_groups.group_0"
	m    map[string]json.RawMessage
}

// maxConfigInt bounds integer fields (bits, group and block sizes): anything
// larger is nonsense, and the bound keeps later shape arithmetic far from
// overflow.
const maxConfigInt = 1 << 31

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// parseObject decodes raw as a JSON object; null gives ok=false.
func parseObject(raw json.RawMessage, path string) (o jsonObject, ok bool, err error) {
	if isNull(raw) {
		return jsonObject{}, false, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return jsonObject{}, false, invalidf("", path, "not a JSON object: %s", jsonReason(err))
	}
	return jsonObject{path: path, m: m}, true, nil
}

// jsonReason shortens a decoding error to its message without Go type names
// where possible.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "found a JSON " + te.Value
	}
	return err.Error()
}

func (o jsonObject) field(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

func (o jsonObject) has(key string) bool {
	raw, ok := o.m[key]
	return ok && !isNull(raw)
}

func (o jsonObject) object(key string) (jsonObject, bool, error) {
	return parseObject(o.m[key], o.field(key))
}

// str returns a string member; absent or null gives ok=false.
func (o jsonObject) str(key string) (string, bool, error) {
	raw := o.m[key]
	if isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, invalidf("", o.field(key), "want a string: %s", jsonReason(err))
	}
	return s, true, nil
}

// integer returns an integral number member (128 or 128.0), bounded by
// ±maxConfigInt; absent or null gives ok=false.
func (o jsonObject) integer(key string) (int, bool, error) {
	raw := o.m[key]
	if isNull(raw) {
		return 0, false, nil
	}
	v, err := jsonInt(raw)
	if err != nil {
		return 0, false, invalidf("", o.field(key), "%s", err.Error())
	}
	return v, true, nil
}

func jsonInt(raw json.RawMessage) (int, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, errString("want an integer: " + jsonReason(err))
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxConfigInt {
		return 0, errString("want an integer of magnitude at most 2^31, found " + string(n))
	}
	return int(f), nil
}

// boolean returns a bool member; absent or null gives ok=false.
func (o jsonObject) boolean(key string) (bool, bool, error) {
	raw := o.m[key]
	if isNull(raw) {
		return false, false, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, false, invalidf("", o.field(key), "want true or false: %s", jsonReason(err))
	}
	return b, true, nil
}

// strings returns a list-of-strings member; a single string is accepted as a
// one-element list (some configs write ignore: "lm_head").
func (o jsonObject) strings(key string) ([]string, error) {
	raw := o.m[key]
	if isNull(raw) {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []string{s}, nil
	}
	return nil, invalidf("", o.field(key), "want a list of strings")
}

// intPair returns a [rows, cols] member: a two-integer list, or the string
// form "128x128"/"128,128" older compressed-tensors wrote (§5.8).
func (o jsonObject) intPair(key string) ([2]int, bool, error) {
	raw := o.m[key]
	if isNull(raw) {
		return [2]int{}, false, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err == nil {
		if len(list) != 2 {
			return [2]int{}, false, invalidf("", o.field(key), "want two integers, found %d values", len(list))
		}
		var p [2]int
		for i, r := range list {
			v, err := jsonInt(r)
			if err != nil {
				return [2]int{}, false, invalidf("", o.field(key), "%s", err.Error())
			}
			p[i] = v
		}
		return p, true, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		s = strings.Trim(strings.TrimSpace(s), "[]()")
		a, b, ok := strings.Cut(s, "x")
		if !ok {
			a, b, ok = strings.Cut(s, ",")
		}
		x, err1 := strconv.Atoi(strings.TrimSpace(a))
		y, err2 := strconv.Atoi(strings.TrimSpace(b))
		if ok && err1 == nil && err2 == nil && x <= maxConfigInt && y <= maxConfigInt {
			return [2]int{x, y}, true, nil
		}
	}
	return [2]int{}, false, invalidf("", o.field(key), "want [rows, cols]")
}

type errString string

func (e errString) Error() string { return string(e) }
