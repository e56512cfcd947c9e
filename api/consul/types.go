package consul

// The JSON shapes of Consul's API, as the Consul Go client decodes them
// (github.com/hashicorp/consul/api). Field names are PascalCase; lists that
// Consul sends as [] when empty are never nil here. go-bexpr filters
// (?filter=) evaluate over these same structs, so their field names are the
// selectors a filter may use.

// Weights are an instance's load-balancing weights.
type Weights struct {
	Passing int
	Warning int
}

// AgentService is a service instance as /v1/agent/services and the
// Service of a health entry show it.
type AgentService struct {
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	Weights           Weights
	EnableTagOverride bool
	CreateIndex       uint64 `bexpr:"-"`
	ModifyIndex       uint64 `bexpr:"-"`
	Datacenter        string `bexpr:"-"`
}

// Node is a Consul node: a Beacon agent.
type Node struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64 `bexpr:"-"`
	ModifyIndex     uint64 `bexpr:"-"`
}

// CatalogService is one instance as /v1/catalog/service/:name shows it.
type CatalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceID                string
	ServiceName              string
	ServiceAddress           string
	ServiceTags              []string
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceWeights           Weights
	ServiceEnableTagOverride bool
	CreateIndex              uint64 `bexpr:"-"`
	ModifyIndex              uint64 `bexpr:"-"`
}

// CheckDefinition is how a check probes, in Consul's form.
type CheckDefinition struct {
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	GRPC                           string              `json:",omitempty"`
	Interval                       string              `json:",omitempty"`
	Timeout                        string              `json:",omitempty"`
	DeregisterCriticalServiceAfter string              `json:",omitempty"`
}

// HealthCheck is a check as the health endpoints and /v1/agent/checks show it.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	Definition  CheckDefinition `bexpr:"-"`
	CreateIndex uint64          `bexpr:"-"`
	ModifyIndex uint64          `bexpr:"-"`
}

// ServiceEntry is one result of /v1/health/service/:name.
type ServiceEntry struct {
	Node    *Node
	Service *AgentService
	Checks  []*HealthCheck
}

// NodeServices is /v1/catalog/node/:node.
type NodeServices struct {
	Node     *Node
	Services map[string]*AgentService
}

// NodeServiceList is /v1/catalog/node-services/:node.
type NodeServiceList struct {
	Node     *Node
	Services []*AgentService
}

// AgentMember is a gossip member as /v1/agent/members shows it.
type AgentMember struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// Serf member statuses, as Consul reports them.
const (
	memberAlive   = 1
	memberLeaving = 2
	memberLeft    = 3
	memberFailed  = 4
)

// Registration is the body of PUT /v1/agent/service/register.
type Registration struct {
	Kind              string
	ID                string
	Name              string
	Tags              []string
	Port              int
	Address           string
	TaggedAddresses   map[string]any
	EnableTagOverride bool
	Meta              map[string]string
	Weights           *Weights
	Check             *CheckRegistration
	Checks            []*CheckRegistration
	Proxy             any
	Connect           any
	Namespace         string
	Partition         string
	SocketPath        string
}

// CheckRegistration is a check in a registration (Consul's
// AgentServiceCheck). The fields Beacon refuses are here so that a request
// using them gets a 400 naming them rather than being silently ignored.
type CheckRegistration struct {
	CheckID                        string
	ID                             string
	Name                           string
	ScriptArgs                     []string
	Args                           []string
	DockerContainerID              string
	Shell                          string
	Interval                       Duration
	Timeout                        Duration
	TTL                            Duration
	HTTP                           string
	Header                         map[string][]string
	Method                         string
	Body                           string
	TCP                            string
	TCPUseTLS                      bool
	UDP                            string
	Status                         string
	Notes                          string
	TLSServerName                  string
	TLSSkipVerify                  bool
	GRPC                           string
	GRPCUseTLS                     bool
	H2PING                         string
	H2PingUseTLS                   bool
	AliasNode                      string
	AliasService                   string
	OSService                      string
	SuccessBeforePassing           int
	FailuresBeforeWarning          int
	FailuresBeforeCritical         int
	DeregisterCriticalServiceAfter Duration
	OutputMaxSize                  int
	ServiceID                      string
}

// CheckUpdate is the body of PUT /v1/agent/check/update/:id.
type CheckUpdate struct {
	Status string
	Output string
}

// CatalogRegistration is the body of PUT /v1/catalog/register.
type CatalogRegistration struct {
	ID              string
	Node            string
	Address         string
	TaggedAddresses map[string]string
	NodeMeta        map[string]string
	Datacenter      string
	Service         *CatalogServiceRegistration
	Check           *CatalogCheck
	Checks          []*CatalogCheck
	SkipNodeUpdate  bool
	Partition       string
	Namespace       string
}

// CatalogServiceRegistration is the Service of a catalog registration.
type CatalogServiceRegistration struct {
	Kind              string
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]any
	Weights           *Weights
	EnableTagOverride bool
	Namespace         string
	Partition         string
}

// CatalogCheck is a check of a catalog registration.
type CatalogCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	Type        string
	Definition  *CatalogCheckDefinition
}

// CatalogCheckDefinition is how a catalog-registered check probes.
type CatalogCheckDefinition struct {
	HTTP                           string
	Header                         map[string][]string
	Method                         string
	Body                           string
	TLSSkipVerify                  bool
	TCP                            string
	GRPC                           string
	Interval                       Duration
	Timeout                        Duration
	DeregisterCriticalServiceAfter Duration
	IntervalDuration               Duration
	TimeoutDuration                Duration
}

// CatalogDeregistration is the body of PUT /v1/catalog/deregister.
type CatalogDeregistration struct {
	Node       string
	Address    string
	Datacenter string
	ServiceID  string
	CheckID    string
	Namespace  string
	Partition  string
}
