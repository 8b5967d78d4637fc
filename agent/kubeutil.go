package agent

import (
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func labelsEverything() labels.Selector { return labels.Everything() }

func labelsFor(k, v string) labels.Selector { return labels.SelectorFromSet(labels.Set{k: v}) }

func exportEqual(a, b *fedv1.ExportedService) bool { return proto.Equal(a, b) }
