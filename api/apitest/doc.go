// Package apitest provides test doubles for the api package's interfaces,
// after the standard library's httptest.
//
// Cluster stands in for the cluster node behind the API. It is as real as a
// single process allows: writes go through a real fsm.FSM, applied as Raft
// log entries with increasing indexes, exactly as cluster.Node.Apply would
// apply them once committed; reads see that FSM's store. Only the parts that
// need other nodes (elections, gossip, forwarding) are simulated.
//
// A typical test:
//
//	cl := apitest.NewCluster(nil)
//	srv := httptest.NewServer(api.New(api.DefaultConfig(), cl.Store(), cl).Handler())
//	defer srv.Close()
package apitest
