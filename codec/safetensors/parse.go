package safetensors

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// parser reads the JSON header with a hand-written scanner instead of
// encoding/json because the format needs things encoding/json cannot give:
// it must see duplicate keys (encoding/json keeps the last), reject lone
// UTF-16 surrogates in escapes as serde_json does (encoding/json substitutes
// U+FFFD), and read integers up to 2^64-1 exactly. It only accepts the
// safetensors schema, never an arbitrary JSON value, so nesting is at most
// three levels deep and it allocates no more than a small multiple of the
// header length, whatever the input.
type parser struct {
	text []byte // the JSON header, without the 8-byte length prefix
	pos  int
	file string
}

// Header keys and tensor-entry fields.
const (
	metadataKey      = "__metadata__"
	fieldDType       = "dtype"
	fieldShape       = "shape"
	fieldDataOffsets = "data_offsets"
)

// maxNumberInReason bounds how much of a (possibly megabytes long) number
// token an error message repeats.
const maxNumberInReason = 40

// parseHeader parses the header object. Tensors come back in header order.
func (p *parser) parseHeader() (map[string]string, []TensorInfo, error) {
	if !utf8.Valid(p.text) {
		return nil, nil, p.fail(ErrInvalidHeader, "", "", "header is not valid UTF-8 (first bad byte at file offset %d)", prefixLen+firstInvalidUTF8(p.text))
	}
	if len(p.text) == 0 || p.text[0] != '{' {
		return nil, nil, p.fail(ErrInvalidHeader, "", "", "header does not start with '{'")
	}
	p.pos++
	var (
		metadata    map[string]string
		hasMetadata bool
		tensors     = []TensorInfo{}
		names       = make(map[string]struct{})
	)
	err := p.parseObject("", "", func(key string) error {
		if key == metadataKey {
			if hasMetadata {
				return p.fail(ErrInvalidMetadata, "", metadataKey, "appears twice in the header")
			}
			hasMetadata = true
			var err error
			metadata, err = p.parseMetadata()
			return err
		}
		if _, dup := names[key]; dup {
			return p.fail(ErrDuplicateTensor, key, "", "name appears twice in the header")
		}
		names[key] = struct{}{}
		t, err := p.parseTensor(key)
		if err != nil {
			return err
		}
		tensors = append(tensors, t)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	p.skipSpace()
	if p.pos != len(p.text) {
		return nil, nil, p.fail(ErrInvalidHeader, "", "", "unexpected %s at file offset %d after the JSON object (only whitespace may follow it)", describeByte(p.text[p.pos]), prefixLen+p.pos)
	}
	return metadata, tensors, nil
}

// parseObject parses the members of an object whose '{' was just consumed,
// calling member with each key once the parser is positioned at its value.
// tensor and field only label syntax errors.
func (p *parser) parseObject(tensor, field string, member func(key string) error) error {
	p.skipSpace()
	if p.consume('}') {
		return nil
	}
	for {
		if c, ok := p.peek(); !ok || c != '"' {
			return p.syntaxError(tensor, field, "an object key")
		}
		key, err := p.parseString(tensor, field)
		if err != nil {
			return err
		}
		p.skipSpace()
		if !p.consume(':') {
			return p.syntaxError(tensor, field, "':'")
		}
		p.skipSpace()
		if err := member(key); err != nil {
			return err
		}
		p.skipSpace()
		if p.consume('}') {
			return nil
		}
		if !p.consume(',') {
			return p.syntaxError(tensor, field, "',' or '}'")
		}
		p.skipSpace()
	}
}

// parseMetadata parses the value of __metadata__: an object of strings, or
// null, which serde reads as "no metadata".
func (p *parser) parseMetadata() (map[string]string, error) {
	c, _ := p.peek()
	if c == 'n' {
		if err := p.parseLiteral("null", "", metadataKey); err != nil {
			return nil, err
		}
		return nil, nil
	}
	if c != '{' {
		return nil, p.fail(ErrInvalidMetadata, "", metadataKey, "is %s, not an object of strings", p.describeValue())
	}
	p.pos++
	metadata := make(map[string]string)
	err := p.parseObject("", metadataKey, func(key string) error {
		if _, dup := metadata[key]; dup {
			return p.fail(ErrInvalidMetadata, "", metadataKey, "key %s appears twice", quoteForMessage(key))
		}
		if c, _ := p.peek(); c != '"' {
			return p.fail(ErrInvalidMetadata, "", metadataKey, "value of key %s is %s, not a string", quoteForMessage(key), p.describeValue())
		}
		value, err := p.parseString("", metadataKey)
		if err != nil {
			return err
		}
		metadata[key] = value
		return nil
	})
	if err != nil {
		return nil, err
	}
	return metadata, nil
}

// parseTensor parses one tensor entry.
func (p *parser) parseTensor(name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	if c, _ := p.peek(); c != '{' {
		return t, p.fail(ErrInvalidTensor, name, "", "entry is %s, not an object with dtype, shape and data_offsets", p.describeValue())
	}
	p.pos++
	var hasDType, hasShape, hasOffsets bool
	err := p.parseObject(name, "", func(key string) error {
		switch key {
		case fieldDType:
			if hasDType {
				return p.fail(ErrInvalidTensor, name, fieldDType, "field appears twice")
			}
			hasDType = true
			if c, _ := p.peek(); c != '"' {
				return p.fail(ErrInvalidTensor, name, fieldDType, "is %s, not a string", p.describeValue())
			}
			s, err := p.parseString(name, fieldDType)
			if err != nil {
				return err
			}
			d, err := ParseDType(s)
			if err != nil {
				return withContext(err, p.file, name)
			}
			t.DType = d
		case fieldShape:
			if hasShape {
				return p.fail(ErrInvalidTensor, name, fieldShape, "field appears twice")
			}
			hasShape = true
			shape, err := p.parseUintArray(name, fieldShape, "dimension")
			if err != nil {
				return err
			}
			t.Shape = shape
		case fieldDataOffsets:
			if hasOffsets {
				return p.fail(ErrInvalidTensor, name, fieldDataOffsets, "field appears twice")
			}
			hasOffsets = true
			offsets, err := p.parseUintArray(name, fieldDataOffsets, "offset")
			if err != nil {
				return err
			}
			if len(offsets) != 2 {
				return p.fail(ErrInvalidTensor, name, fieldDataOffsets, "has %d values, want [begin, end]", len(offsets))
			}
			t.Begin, t.End = offsets[0], offsets[1]
		default:
			return p.fail(ErrInvalidTensor, name, "", "unknown field %s (want only dtype, shape and data_offsets)", quoteForMessage(key))
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	for _, f := range []struct {
		name string
		seen bool
	}{{fieldDType, hasDType}, {fieldShape, hasShape}, {fieldDataOffsets, hasOffsets}} {
		if !f.seen {
			return t, p.fail(ErrInvalidTensor, name, f.name, "missing")
		}
	}
	return t, nil
}

// parseUintArray parses an array of integers in [0, 2^64-1]. what names one
// element in errors ("dimension", "offset").
func (p *parser) parseUintArray(tensor, field, what string) ([]uint64, error) {
	if c, _ := p.peek(); c != '[' {
		return nil, p.fail(ErrInvalidTensor, tensor, field, "is %s, not an array of non-negative integers", p.describeValue())
	}
	p.pos++
	p.skipSpace()
	values := []uint64{}
	if p.consume(']') {
		return values, nil
	}
	for {
		c, _ := p.peek()
		if c != '-' && (c < '0' || c > '9') {
			return nil, p.fail(ErrInvalidTensor, tensor, field, "element %d is %s, not a non-negative integer", len(values), p.describeValue())
		}
		v, err := p.parseUint(tensor, field, what)
		if err != nil {
			return nil, err
		}
		values = append(values, v)
		p.skipSpace()
		if p.consume(']') {
			return values, nil
		}
		if !p.consume(',') {
			return nil, p.syntaxError(tensor, field, "',' or ']'")
		}
		p.skipSpace()
	}
}

// parseUint scans one JSON number and accepts it only if it is an integer
// that fits a uint64, as serde does for usize: "-0", "1.0" and "1e3" are
// rejected because serde_json reads them as floats.
func (p *parser) parseUint(tensor, field, what string) (uint64, error) {
	start := p.pos
	negative := p.consume('-')
	switch c, _ := p.peek(); {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		p.skipDigits()
	default:
		return 0, p.syntaxError(tensor, field, "a digit")
	}
	isInteger := true
	if p.consume('.') {
		isInteger = false
		if !p.skipDigits() {
			return 0, p.syntaxError(tensor, field, "a digit after '.'")
		}
	}
	if c, _ := p.peek(); c == 'e' || c == 'E' {
		isInteger = false
		p.pos++
		if c, _ := p.peek(); c == '+' || c == '-' {
			p.pos++
		}
		if !p.skipDigits() {
			return 0, p.syntaxError(tensor, field, "a digit in the exponent")
		}
	}
	token := string(p.text[start:p.pos])
	shown := token
	if len(shown) > maxNumberInReason {
		shown = shown[:maxNumberInReason] + "..."
	}
	switch {
	case negative:
		return 0, p.fail(ErrInvalidTensor, tensor, field, "negative %s %s", what, shown)
	case !isInteger:
		return 0, p.fail(ErrInvalidTensor, tensor, field, "%s %s is not an integer", what, shown)
	}
	v, err := strconv.ParseUint(token, 10, 64)
	if err != nil {
		return 0, p.fail(ErrInvalidTensor, tensor, field, "%s %s does not fit in 64 bits", what, shown)
	}
	return v, nil
}

// parseString parses a JSON string starting at its opening quote, decoding
// escapes as serde_json does: surrogate escapes must come in valid pairs.
func (p *parser) parseString(tensor, field string) (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: most names have no escapes and can be sliced directly.
	for p.pos < len(p.text) {
		c := p.text[p.pos]
		if c == '"' {
			s := string(p.text[start:p.pos])
			p.pos++
			return s, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		p.pos++
	}
	buf := append([]byte(nil), p.text[start:p.pos]...)
	for {
		if p.pos >= len(p.text) {
			return "", p.syntaxError(tensor, field, "the closing '\"' of a string")
		}
		c := p.text[p.pos]
		switch {
		case c == '"':
			p.pos++
			return string(buf), nil
		case c < 0x20:
			return "", p.fail(ErrInvalidHeader, tensor, field, "control character %#02x in a string at file offset %d (it must be escaped)", c, prefixLen+p.pos)
		case c != '\\':
			buf = append(buf, c)
			p.pos++
			continue
		}
		escapeAt := p.pos
		p.pos++
		if p.pos >= len(p.text) {
			return "", p.syntaxError(tensor, field, "an escape character")
		}
		e := p.text[p.pos]
		p.pos++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := p.parseUnicodeEscape(tensor, field, escapeAt)
			if err != nil {
				return "", err
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.fail(ErrInvalidHeader, tensor, field, "invalid escape %s at file offset %d", strconv.QuoteRune(rune(e)), prefixLen+escapeAt)
		}
	}
}

// parseUnicodeEscape decodes the XXXX of \uXXXX (already past the 'u') and,
// for a high surrogate, the \uXXXX low surrogate that must follow it.
func (p *parser) parseUnicodeEscape(tensor, field string, escapeAt int) (rune, error) {
	hi, err := p.parseHex4(tensor, field)
	if err != nil {
		return 0, err
	}
	if !utf16.IsSurrogate(hi) {
		return hi, nil
	}
	lone := p.fail(ErrInvalidHeader, tensor, field, "lone UTF-16 surrogate \\u%04x at file offset %d", hi, prefixLen+escapeAt)
	if hi >= 0xDC00 || p.pos+2 > len(p.text) || p.text[p.pos] != '\\' || p.text[p.pos+1] != 'u' {
		return 0, lone
	}
	p.pos += 2
	lo, err := p.parseHex4(tensor, field)
	if err != nil {
		return 0, err
	}
	r := utf16.DecodeRune(hi, lo)
	if r == utf8.RuneError {
		return 0, lone
	}
	return r, nil
}

func (p *parser) parseHex4(tensor, field string) (rune, error) {
	if p.pos+4 > len(p.text) {
		return 0, p.syntaxError(tensor, field, "four hex digits after \\u")
	}
	var r rune
	for _, c := range p.text[p.pos : p.pos+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, p.syntaxError(tensor, field, "four hex digits after \\u")
		}
		r = r<<4 | rune(v)
	}
	p.pos += 4
	return r, nil
}

// parseLiteral consumes the literal word (null, true, false).
func (p *parser) parseLiteral(word, tensor, field string) error {
	if p.pos+len(word) > len(p.text) || string(p.text[p.pos:p.pos+len(word)]) != word {
		return p.syntaxError(tensor, field, word)
	}
	p.pos += len(word)
	return nil
}

// describeValue names the kind of JSON value starting at the current
// position, for "is X, not Y" messages.
func (p *parser) describeValue() string {
	c, ok := p.peek()
	switch {
	case !ok:
		return "missing"
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	}
	return "not a JSON value (" + describeByte(c) + ")"
}

// syntaxError reports invalid JSON at the current position.
func (p *parser) syntaxError(tensor, field, want string) error {
	if p.pos >= len(p.text) {
		return p.fail(ErrInvalidHeader, tensor, field, "header ends where %s was expected", want)
	}
	return p.fail(ErrInvalidHeader, tensor, field, "expected %s at file offset %d, found %s", want, prefixLen+p.pos, describeByte(p.text[p.pos]))
}

func (p *parser) fail(class error, tensor, field, format string, args ...any) error {
	return &FormatError{File: p.file, Tensor: tensor, Field: field, Reason: fmt.Sprintf(format, args...), Err: class}
}

func (p *parser) peek() (byte, bool) {
	if p.pos >= len(p.text) {
		return 0, false
	}
	return p.text[p.pos], true
}

func (p *parser) consume(c byte) bool {
	if p.pos < len(p.text) && p.text[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

// skipSpace skips JSON whitespace, the set serde_json allows between tokens.
func (p *parser) skipSpace() {
	for p.pos < len(p.text) {
		switch p.text[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// skipDigits skips decimal digits and reports whether there was at least one.
func (p *parser) skipDigits() bool {
	start := p.pos
	for p.pos < len(p.text) && p.text[p.pos] >= '0' && p.text[p.pos] <= '9' {
		p.pos++
	}
	return p.pos > start
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7F {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte %#02x", c)
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}
