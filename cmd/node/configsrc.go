package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agnivade/levenshtein"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// The sources of a setting, strongest first: a flag given on the command
// line, its BAYEUX_* environment variable, its key in the --config file,
// the flag's default. Every source is checked whole: an unknown flag, an
// unknown BAYEUX_* variable or an unknown file key stops the node with one
// line naming the closest valid name, and a value that does not parse says
// what was given and what is expected.

// envPrefix starts every environment variable the node reads.
const envPrefix = "BAYEUX_"

// envName maps a flag name to its environment variable.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Flags that act on the command line only: no environment variable and no
// file key. --config may come from the environment (BAYEUX_CONFIG), not
// from a file.
var (
	commandOnly = []string{"print-config", "version"}
	notInFile   = []string{"config", "print-config", "version"}
)

// parseConfig fills a config from args, environ (KEY=VALUE pairs; only
// BAYEUX_* ones are read) and the --config file, in that precedence, then
// validates it. flag.ErrHelp means -h or --help was given.
func parseConfig(args, environ []string) (*config, error) {
	c := &config{}
	fs := newFlagSet(c)
	c.flags = fs
	if err := parseArgs(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: every setting is a --flag", fs.Args())
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	env, err := envSettings(fs, environ)
	if err != nil {
		return nil, err
	}
	path := c.ConfigFile
	if !explicit["config"] {
		path = env["config"]
	}
	if path != "" {
		fileSettings, err := loadFile(fs, path)
		if err != nil {
			return nil, err
		}
		for _, k := range sortedKeys(fileSettings) {
			if explicit[k] || env[k] != "" {
				continue
			}
			if err := setValue(fs.Lookup(k), fileSettings[k], filepath.Base(path)+": "+k+": "); err != nil {
				return nil, err
			}
		}
	}
	for _, k := range sortedKeys(env) {
		if explicit[k] {
			continue
		}
		if err := setValue(fs.Lookup(k), env[k], envName(k)+"="); err != nil {
			return nil, err
		}
	}
	if c.Version || c.PrintConfig {
		return c, nil // nothing else is checked: --print-config shows a configuration to be fixed
	}
	return c, c.validate()
}

// parseArgs parses the command line, turning the flag package's errors
// into one line each.
func parseArgs(fs *flag.FlagSet, args []string) error {
	var bad *valueError
	originals := map[string]flag.Value{}
	fs.VisitAll(func(f *flag.Flag) {
		originals[f.Name] = f.Value
		f.Value = &recordingValue{Value: f.Value, flag: f, bad: &bad}
	})
	err := fs.Parse(args)
	fs.VisitAll(func(f *flag.Flag) { f.Value = originals[f.Name] })
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return err
	case bad != nil:
		return bad
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimPrefix(name, "-")
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		return fmt.Errorf("unknown flag --%s (did you mean --%s?)", name, closest(name, names))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("flag --%s needs a value", strings.TrimPrefix(name, "-"))
	}
	return err
}

// recordingValue keeps the details of a command-line value that does not
// parse, which the flag package's own error loses.
type recordingValue struct {
	flag.Value
	flag *flag.Flag
	bad  **valueError
}

func (r *recordingValue) Set(s string) error {
	err := r.Value.Set(s)
	if err != nil && *r.bad == nil {
		*r.bad = newValueError(r.Value, s, "--"+r.flag.Name+" ", err)
	}
	return err
}

func (r *recordingValue) IsBoolFlag() bool {
	b, ok := r.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// valueError is a setting whose value does not parse: where it came from,
// what was given and what is expected.
type valueError struct {
	Where string // "--timeout ", "BAYEUX_TIMEOUT=", "node.yaml: timeout: "
	Value string
	Want  string
}

func (e *valueError) Error() string { return fmt.Sprintf("%s%q: want %s", e.Where, e.Value, e.Want) }

func newValueError(v flag.Value, value, where string, err error) *valueError {
	e := &valueError{Where: where, Value: value}
	getter, _ := v.(flag.Getter)
	var current any
	if getter != nil {
		current = getter.Get()
	}
	switch current.(type) {
	case time.Duration:
		e.Want = "a duration with a unit, such as 500ms, 30s or 2m"
		if _, perr := strconv.ParseFloat(value, 64); perr == nil {
			e.Want += fmt.Sprintf(" (did you mean %ss?)", value)
		}
	case bool:
		e.Want = "true or false"
	case int, int64:
		e.Want = "a whole number"
	case float64:
		e.Want = "a number"
	default:
		e.Want = fmt.Sprintf("a valid value (%v)", err)
	}
	return e
}

// setValue sets flag f from a lower-precedence source.
func setValue(f *flag.Flag, value, where string) error {
	if err := f.Value.Set(value); err != nil {
		return newValueError(f.Value, value, where, err)
	}
	return nil
}

// envSettings returns the non-empty BAYEUX_* settings of environ by flag
// name, and rejects a BAYEUX_* variable that names no setting.
func envSettings(fs *flag.FlagSet, environ []string) (map[string]string, error) {
	byEnv := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(commandOnly, f.Name) {
			byEnv[envName(f.Name)] = f.Name
		}
	})
	out := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix) {
			continue
		}
		name, ok := byEnv[k]
		if !ok {
			return nil, fmt.Errorf("unknown environment variable %s (did you mean %s?)", k, closest(k, sortedKeys(byEnv)))
		}
		if v != "" {
			out[name] = v
		}
	}
	return out, nil
}

// loadFile reads a YAML or TOML settings file (by extension) and returns
// its settings by flag name, rejecting unknown keys.
func loadFile(fs *flag.FlagSet, path string) (map[string]string, error) {
	var parser koanf.Parser
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		parser = yaml.Parser()
	case ".toml":
		parser = toml.Parser()
	default:
		return nil, fmt.Errorf("--config %q: want a .yaml, .yml or .toml file", path)
	}
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), parser); err != nil {
		return nil, fmt.Errorf("--config %q: %w", path, oneLine(err))
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(notInFile, f.Name) {
			names = append(names, f.Name)
		}
	})
	out := map[string]string{}
	for key, v := range k.All() {
		if !slices.Contains(names, key) {
			return nil, fmt.Errorf("%s: unknown key %q (did you mean %q?)", filepath.Base(path), key, closest(key, names))
		}
		s, err := fileValue(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", filepath.Base(path), key, err)
		}
		out[key] = s
	}
	return out, nil
}

// fileValue turns a parsed YAML or TOML value into the flag's text form;
// a list becomes the comma-separated form of the list flags (join,
// allowed-origins, trusted-proxies, ...).
func fileValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool, int, int64, uint64:
		return fmt.Sprint(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, err := fileValue(e)
			if err != nil || strings.Contains(s, ",") {
				return "", fmt.Errorf("list item %v: want a plain value", e)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("value %v (%T): want a string, number, boolean or list", v, v)
	}
}

// closest returns the candidate nearest to s (edit distance; ties go to
// the candidate sharing the longest prefix with s).
func closest(s string, candidates []string) string {
	best, bestDist, bestPrefix := "", -1, -1
	for _, c := range candidates {
		d := levenshtein.ComputeDistance(s, c)
		p := commonPrefix(s, c)
		if bestDist < 0 || d < bestDist || (d == bestDist && p > bestPrefix) {
			best, bestDist, bestPrefix = c, d, p
		}
	}
	return best
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// oneLine flattens a multi-line parser error.
func oneLine(err error) error {
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

// printUsage writes the flag list (for -h and --help).
func printUsage(w io.Writer) {
	fs := newFlagSet(&config{})
	fs.SetOutput(w)
	fmt.Fprintf(w, "Usage: bayeux-node [flags]\n\nEvery flag may also be set with its %s* environment variable (--max-interval: %s)\nor, by its name, in a --config file (max-interval: 10s). Precedence: flag > environment > file > default.\n\n",
		envPrefix, envName("max-interval"))
	fs.PrintDefaults()
}
