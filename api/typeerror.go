package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// locateTypeError finds, in document order, the first JSON value of body
// that cannot go into the Go value of type t, and returns the validation
// error the API answers with: the field path without array indexes or map
// keys (`checks.interval`, `meta`), as docs/api.md promises.
//
// encoding/json reports such a path itself, but not the same way in every
// Go release: Go 1.27 backs encoding/json with the v2 implementation, whose
// paths include array indexes and map keys and which leaves the path of an
// error returned by an UnmarshalJSON method (client.Duration) empty. Walking
// the document against the type gives the same answer on every release.
// It returns nil when it finds nothing (the caller then falls back on the
// decoder's own error).
func locateTypeError(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	w := typeWalker{dec: dec}
	err := w.value(t, "")
	if w.broken {
		return nil
	}
	return err
}

type typeWalker struct {
	dec    *json.Decoder
	broken bool // the document ended or is not JSON: not ours to report
}

func (w *typeWalker) token() json.Token {
	tok, err := w.dec.Token()
	if err != nil {
		w.broken = true
		return nil
	}
	return tok
}

// value checks the next value of the document against t.
func (w *typeWalker) value(t reflect.Type, path string) error {
	tok := w.token()
	if w.broken {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if tok == nil {
		return nil // null fits anything
	}
	if t == durationType {
		if d, ok := tok.(json.Delim); ok {
			w.skip(d)
			return invalid(path, "must be a duration string such as \"10s\"")
		}
		if s, ok := tok.(string); !ok || !validDuration(s) {
			return invalid(path, "must be a duration string such as \"10s\"")
		}
		return nil
	}
	if t.Kind() == reflect.Interface {
		if d, ok := tok.(json.Delim); ok {
			w.skip(d)
		}
		return nil
	}
	switch v := tok.(type) {
	case json.Delim:
		switch {
		case v == '{' && t.Kind() == reflect.Struct:
			return w.object(func(key string) (reflect.Type, string, bool) {
				f, ok := jsonField(t, key)
				if !ok {
					return nil, "", false
				}
				return f.typ, join(path, f.name), true
			})
		case v == '{' && t.Kind() == reflect.Map:
			return w.object(func(string) (reflect.Type, string, bool) { return t.Elem(), path, true })
		case v == '[' && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
			for w.dec.More() {
				if err := w.value(t.Elem(), path); err != nil || w.broken {
					return err
				}
			}
			w.token() // ]
			return nil
		}
		w.skip(v)
		kind := "object"
		if v == '[' {
			kind = "array"
		}
		return mismatch(t, kind, path)
	case string:
		if t.Kind() != reflect.String {
			return mismatch(t, "string", path)
		}
	case bool:
		if t.Kind() != reflect.Bool {
			return mismatch(t, "bool", path)
		}
	case json.Number:
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			n, err := strconv.ParseInt(v.String(), 10, 64)
			if err != nil || reflect.New(t).Elem().OverflowInt(n) {
				return invalid(path, "must be an integer in range, not %s", truncateForError("number "+v.String()))
			}
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			n, err := strconv.ParseUint(v.String(), 10, 64)
			if err != nil || reflect.New(t).Elem().OverflowUint(n) {
				return invalid(path, "must be an integer in range, not %s", truncateForError("number "+v.String()))
			}
		case reflect.Float32, reflect.Float64:
		default:
			return mismatch(t, "number", path)
		}
	}
	return nil
}

// object walks the members of an object whose '{' was read; field says
// where a key's value goes (false: an unknown key, skipped).
func (w *typeWalker) object(field func(key string) (reflect.Type, string, bool)) error {
	for w.dec.More() {
		key, _ := w.token().(string)
		if w.broken {
			return nil
		}
		t, path, ok := field(key)
		if !ok {
			if d, isDelim := w.token().(json.Delim); isDelim {
				w.skip(d)
			}
			continue
		}
		if err := w.value(t, path); err != nil || w.broken {
			return err
		}
	}
	w.token() // }
	return nil
}

// skip consumes the rest of a composite value whose opening d was read.
func (w *typeWalker) skip(d json.Delim) {
	if d != '{' && d != '[' {
		return
	}
	for depth := 1; depth > 0 && !w.broken; {
		if t, ok := w.token().(json.Delim); ok {
			if t == '{' || t == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
}

func mismatch(t reflect.Type, got, path string) error {
	return invalid(path, "must be %s, not %s", jsonKind(t), got)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func validDuration(s string) bool {
	_, err := time.ParseDuration(s)
	return err == nil
}

type structField struct {
	name string
	typ  reflect.Type
}

// jsonField finds the field of struct t that the JSON key decodes into, as
// encoding/json matches them (tag name, else field name; case-insensitive;
// embedded structs flattened).
func jsonField(t reflect.Type, key string) (structField, bool) {
	var exact, folded *structField
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			sf := &structField{name: name, typ: f.Type}
			if name == key && exact == nil {
				exact = sf
			} else if strings.EqualFold(name, key) && folded == nil {
				folded = sf
			}
		}
	}
	walk(t)
	switch {
	case exact != nil:
		return *exact, true
	case folded != nil:
		return *folded, true
	}
	return structField{}, false
}

// locateUnknownField returns the path of the first key of body, in
// document order, that no field of the Go type t takes (as encoding/json
// matches keys: tag or field name, case-insensitively): `bogus`,
// `checks[0].bogus`, with array indexes as docs/api.md's field paths have
// them (encoding/json names the key alone). "" when it finds none.
func locateUnknownField(body []byte, t reflect.Type) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	w := typeWalker{dec: dec}
	return w.unknownField(t, "")
}

// unknownField walks the next value of the document against t and returns
// the path of the first unknown key in it ("" if none).
func (w *typeWalker) unknownField(t reflect.Type, path string) string {
	tok := w.token()
	if w.broken {
		return ""
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return ""
	}
	switch {
	case d == '{' && t.Kind() == reflect.Struct && t != durationType:
		for w.dec.More() {
			key, _ := w.token().(string)
			if w.broken {
				return ""
			}
			f, ok := jsonField(t, key)
			if !ok {
				return join(path, key)
			}
			if p := w.unknownField(f.typ, join(path, f.name)); p != "" || w.broken {
				return p
			}
		}
	case d == '{' && t.Kind() == reflect.Map:
		for w.dec.More() {
			key, _ := w.token().(string)
			if w.broken {
				return ""
			}
			if p := w.unknownField(t.Elem(), join(path, key)); p != "" || w.broken {
				return p
			}
		}
	case d == '[' && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i := 0; w.dec.More(); i++ {
			if p := w.unknownField(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); p != "" || w.broken {
				return p
			}
		}
	default:
		w.skip(d)
		return ""
	}
	w.token() // } or ]
	return ""
}
