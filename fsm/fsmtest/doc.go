// Package fsmtest builds Raft log entries for tests of the fsm package and of
// the packages that sit on top of it.
//
// Each builder returns a command encoded with fsm.Encode, exactly as a
// proposer would put it in the Raft log, so tests feed the FSM the same bytes
// a cluster would. Builders take a testing.TB, call t.Helper and fail the
// test with t.Fatalf when a command cannot be built; they never panic on
// their own.
//
// A typical test:
//
//	f := fsm.New(nil)
//	fsmtest.MustApply(t, f, 1, fsmtest.Register(t, "web-1", "web", fsmtest.WithAddress("10.0.0.1", 80)))
//	_, insts := f.Store().ServiceInstances(nil, "web")
package fsmtest
