package agent

// Labels on everything the agent writes. The agent never modifies or
// deletes an object without LabelManagedBy=ManagedByValue.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "meshfed-agent"
	// LabelService holds the imported service's name on derived objects.
	LabelService = "meshfed.io/service"
	// AnnotationEgressPorts records the egress port assigned to each
	// port of an import ("name=port,...").
	AnnotationEgressPorts = "meshfed.io/egress-ports"
)
