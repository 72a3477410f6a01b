// cni-libcni drives CNI plugins through libcni, the Go library containerd and CRI-O use to
// run them: the Debian package golang-github-containernetworking-cni-dev (libcni 1.1.2,
// spec 1.0.0), built offline in GOPATH mode (see build.sh). End-to-end tests run it the way a
// runtime would run our `zerotier` plugin, including the result cache and its conversions.
//
// libcni 1.1.2 predates spec 1.1.0, so `status` and `gc` exec the plugins themselves the way
// libcni 1.2+ does (GetStatusNetworkList, GCNetworkList without the synthesized DELs): each
// plugin of the list gets its config with "cniVersion": "1.1.0" and the list's name, and GC
// also "cni.dev/valid-attachments" (and the spec tag's "cni.dev/attachments").
//
//	cni-libcni add      -conflist F -cni-path DIRS -id ID -netns PATH [-ifname eth0] [-args K=V;...] [-port-mappings JSON] [-cache-dir DIR]
//	cni-libcni check    (same flags)
//	cni-libcni del      (same flags)
//	cni-libcni validate -conflist F -cni-path DIRS
//	cni-libcni status   -conflist F -cni-path DIRS [-type PLUGIN]
//	cni-libcni gc       -conflist F -cni-path DIRS [-valid ID/IFNAME,ID/IFNAME...] [-type PLUGIN]
//
// -type limits status and gc to the plugins of that type: reference plugins older than 1.5
// (Debian's portmap 1.1.1) answer them with an error, as they predate spec 1.1.0.
//
// Success: exit 0; add prints its result (in the list's version) as JSON on stdout,
// validate the versions the plugins support. Failure: exit 1, the error on stderr, and, when
// a plugin returned a CNI error, that error as {"code","msg","details"} JSON on stdout so a
// test can check its code.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// The version the 1.1.0-only verbs run at, and their attachment keys.
const (
	statusVersion      = "1.1.0"
	validAttachments   = "cni.dev/valid-attachments"
	attachmentsTagName = "cni.dev/attachments"
)

type options struct {
	conflist     string
	cniPath      string
	containerID  string
	netns        string
	ifName       string
	args         string
	portMappings string
	cacheDir     string
	valid        string
	onlyType     string
	timeout      time.Duration
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	command := os.Args[1]
	flags := flag.NewFlagSet(command, flag.ExitOnError)
	var o options
	flags.StringVar(&o.conflist, "conflist", "", "the network config list file")
	flags.StringVar(&o.cniPath, "cni-path", "", "plugin directories, ':'-separated")
	flags.StringVar(&o.containerID, "id", "", "container ID")
	flags.StringVar(&o.netns, "netns", "", "network namespace path (may be empty for del)")
	flags.StringVar(&o.ifName, "ifname", "eth0", "interface name in the container")
	flags.StringVar(&o.args, "args", "", "CNI_ARGS, K=V;K2=V2")
	flags.StringVar(&o.portMappings, "port-mappings", "", "portMappings capability argument, JSON")
	flags.StringVar(&o.cacheDir, "cache-dir", "", "libcni's result cache [/var/lib/cni]")
	flags.StringVar(&o.valid, "valid", "", "gc: valid attachments, ID/IFNAME,...")
	flags.StringVar(&o.onlyType, "type", "", "status, gc: only the plugins of this type")
	flags.DurationVar(&o.timeout, "timeout", 5*time.Minute, "deadline of the whole operation")
	if err := flags.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	if o.conflist == "" || o.cniPath == "" {
		fail(errors.New("-conflist and -cni-path are required"))
	}
	list, err := libcni.ConfListFromFile(o.conflist)
	if err != nil {
		fail(err)
	}
	paths := filepath.SplitList(o.cniPath)
	cni := libcni.NewCNIConfigWithCacheDir(paths, o.cacheDir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	switch command {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, runtimeConf(o))
		if err != nil {
			fail(err)
		}
		printJSON(result)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, runtimeConf(o)); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, runtimeConf(o)); err != nil {
			fail(err)
		}
	case "validate":
		capabilities, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		printJSON(map[string]interface{}{"capabilities": capabilities})
	case "status":
		for _, plugin := range selected(list, o.onlyType) {
			if err := execNewVerb(ctx, "STATUS", list, plugin, paths, nil); err != nil {
				fail(err)
			}
		}
	case "gc":
		attachments := parseAttachments(o.valid)
		for _, plugin := range selected(list, o.onlyType) {
			if err := execNewVerb(ctx, "GC", list, plugin, paths, attachments); err != nil {
				fail(err)
			}
		}
	default:
		usage()
	}
}

func runtimeConf(o options) *libcni.RuntimeConf {
	if o.containerID == "" {
		fail(errors.New("-id is required"))
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    o.containerID,
		NetNS:          o.netns,
		IfName:         o.ifName,
		CapabilityArgs: map[string]interface{}{},
	}
	for _, pair := range strings.Split(o.args, ";") {
		if pair == "" {
			continue
		}
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 {
			fail(fmt.Errorf("-args entry %q is not K=V", pair))
		}
		rt.Args = append(rt.Args, [2]string{kv[0], kv[1]})
	}
	if o.portMappings != "" {
		var mappings []map[string]interface{}
		if err := json.Unmarshal([]byte(o.portMappings), &mappings); err != nil {
			fail(fmt.Errorf("-port-mappings: %v", err))
		}
		rt.CapabilityArgs["portMappings"] = mappings
	}
	return rt
}

// selected is the list's plugins, or those of type onlyType when it is given.
func selected(list *libcni.NetworkConfigList, onlyType string) []*libcni.NetworkConfig {
	var plugins []*libcni.NetworkConfig
	for _, plugin := range list.Plugins {
		if onlyType == "" || plugin.Network.Type == onlyType {
			plugins = append(plugins, plugin)
		}
	}
	return plugins
}

// execNewVerb runs STATUS or GC on one plugin of the list as libcni 1.2+ would.
func execNewVerb(ctx context.Context, verb string, list *libcni.NetworkConfigList, plugin *libcni.NetworkConfig, paths []string, attachments []map[string]string) error {
	var config map[string]interface{}
	if err := json.Unmarshal(plugin.Bytes, &config); err != nil {
		return err
	}
	config["name"] = list.Name
	config["cniVersion"] = statusVersion
	if verb == "GC" {
		config[validAttachments] = attachments
		config[attachmentsTagName] = attachments
	}
	stdin, err := json.Marshal(config)
	if err != nil {
		return err
	}
	pluginPath, err := invoke.FindInPath(plugin.Network.Type, paths)
	if err != nil {
		return err
	}
	args := &invoke.Args{Command: verb, Path: strings.Join(paths, string(os.PathListSeparator))}
	return invoke.ExecPluginWithoutResult(ctx, pluginPath, stdin, args, nil)
}

func parseAttachments(text string) []map[string]string {
	attachments := []map[string]string{}
	for _, item := range strings.Split(text, ",") {
		if item == "" {
			continue
		}
		parts := strings.SplitN(item, "/", 2)
		if len(parts) != 2 {
			fail(fmt.Errorf("-valid entry %q is not ID/IFNAME", item))
		}
		attachments = append(attachments, map[string]string{"containerID": parts[0], "ifname": parts[1]})
	}
	return attachments
}

func printJSON(value interface{}) {
	bytes, err := json.Marshal(value)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(bytes))
}

// fail prints err and exits 1; a plugin's CNI error is also printed as JSON on stdout.
func fail(err error) {
	var cniError *types.Error
	if errors.As(err, &cniError) {
		bytes, _ := json.Marshal(cniError)
		fmt.Println(string(bytes))
	}
	fmt.Fprintln(os.Stderr, "cni-libcni:", err)
	os.Exit(1)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cni-libcni add|check|del|validate|status|gc -conflist FILE -cni-path DIRS [options]")
	os.Exit(2)
}
