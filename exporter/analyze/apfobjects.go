package analyze

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// maxAPFObjectsBytes bounds the file of APF objects: a cluster has a few
// dozen, a few KB each.
const maxAPFObjectsBytes = 16 << 20

// ReadAPFObjects reads the APF configuration in force from what
// `kubectl get flowschemas,prioritylevelconfigurations -o yaml` (or -o
// json) prints: a List, or YAML documents of FlowSchemas and
// PriorityLevelConfigurations. Any other kind is an error naming it; so is
// a file without a level (every schema would be dangling).
func ReadAPFObjects(path string) ([]*flowcontrolv1.FlowSchema, []*flowcontrolv1.PriorityLevelConfiguration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAPFObjectsBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxAPFObjectsBytes {
		return nil, nil, fmt.Errorf("%s: larger than %d MiB: not a cluster's FlowSchemas and priority levels", path, maxAPFObjectsBytes>>20)
	}
	return ParseAPFObjects(path, b)
}

// ParseAPFObjects parses what ReadAPFObjects reads; name is the file's, for
// errors.
func ParseAPFObjects(name string, b []byte) ([]*flowcontrolv1.FlowSchema, []*flowcontrolv1.PriorityLevelConfiguration, error) {
	path := name
	var (
		schemas []*flowcontrolv1.FlowSchema
		levels  []*flowcontrolv1.PriorityLevelConfiguration
		n       int
	)
	var add func(obj map[string]any) error
	add = func(obj map[string]any) error {
		if len(obj) == 0 {
			return nil
		}
		kind, _ := obj["kind"].(string)
		if items, ok := obj["items"].([]any); ok && (kind == "List" || kind == "FlowSchemaList" || kind == "PriorityLevelConfigurationList") {
			for _, it := range items {
				m, ok := it.(map[string]any)
				if !ok {
					return fmt.Errorf("%s: an item of the %s is not an object", path, kind)
				}
				if err := add(m); err != nil {
					return err
				}
			}
			return nil
		}
		n++
		var into any
		switch kind {
		case "FlowSchema":
			fs := &flowcontrolv1.FlowSchema{}
			schemas, into = append(schemas, fs), fs
		case "PriorityLevelConfiguration":
			pl := &flowcontrolv1.PriorityLevelConfiguration{}
			levels, into = append(levels, pl), pl
		default:
			return fmt.Errorf("%s: object %d is a %q: want FlowSchemas and PriorityLevelConfigurations (kubectl get flowschemas,prioritylevelconfigurations -o yaml)", path, n, clean(kind))
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj, into, true); err != nil {
			return fmt.Errorf("%s: object %d (%s): %w", path, n, kind, err)
		}
		return nil
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := add(obj); err != nil {
			return nil, nil, err
		}
	}
	if len(levels) == 0 {
		return nil, nil, fmt.Errorf("%s has no PriorityLevelConfiguration: get both kinds (kubectl get flowschemas,prioritylevelconfigurations -o yaml)", path)
	}
	return schemas, levels, nil
}
