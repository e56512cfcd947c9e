package fsm

import "fmt"

// strIndex is memdb.StringFieldIndex for one string field of *T, read by a
// function instead of by reflection. Its keys are StringFieldIndex's (the
// value and a NUL terminator; an empty value has no entry), made with one
// allocation instead of two and without reflect.Value.FieldByName, which a
// write paid on every insert and every lookup of the index
// (TestStrIndexMatchesStringFieldIndex holds the two to the same bytes).
type strIndex[T any] struct {
	field string
	get   func(*T) string
}

func strField[T any](field string, get func(*T) string) strIndex[T] {
	return strIndex[T]{field: field, get: get}
}

// indexedField names the field (tests compare with StringFieldIndex).
func (x strIndex[T]) indexedField() string { return x.field }

// nulTerminated returns s and a NUL in a new slice.
func nulTerminated(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

// keyedRow is a row that carries its key in its one string index, made
// once per name (rowCache.key): the rows written for every change of a
// service. Only tables with one string index have such rows.
type keyedRow interface{ idKey() []byte }

func (x strIndex[T]) FromObject(obj any) (bool, []byte, error) {
	o, ok := obj.(*T)
	if !ok || o == nil {
		return false, nil, fmt.Errorf("fsm: %s index: %T is not a %T", x.field, obj, (*T)(nil))
	}
	if r, ok := obj.(keyedRow); ok {
		if k := r.idKey(); k != nil {
			return true, k, nil
		}
	}
	v := x.get(o)
	if v == "" {
		return false, nil, nil
	}
	return true, nulTerminated(v), nil
}

func (x strIndex[T]) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("fsm: %s index takes one argument, got %d", x.field, len(args))
	}
	arg, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("fsm: %s index: argument is %T, not a string", x.field, args[0])
	}
	return nulTerminated(arg), nil
}

// PrefixFromArgs is FromArgs without the terminator: a prefix of keys.
func (x strIndex[T]) PrefixFromArgs(args ...any) ([]byte, error) {
	b, err := x.FromArgs(args...)
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}

// hasKey reports whether FromObject(obj) would give key.
func (x strIndex[T]) hasKey(obj any, key []byte) bool {
	o, ok := obj.(*T)
	if !ok || o == nil || len(key) == 0 || key[len(key)-1] != 0 {
		return false
	}
	v := x.get(o)
	return v != "" && v == string(key[:len(key)-1])
}
