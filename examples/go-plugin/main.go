// go-ptp: a small ptp-like CNI plugin on the CNI project's own Go libraries, the shape most
// CNI plugins have (read it beside plugins/main/ptp/ptp.go). One veth pair per attachment: the
// pod side gets the IPAM result's address, a /32 route to the gateway and the routes via it;
// the host side gets the gateway as a /32 and a /32 route to the pod. Cross-node routing is
// not its job: the lab's node_setup hook adds host-gw routes (examples/netns-go-plugin.toml).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

func init() {
	// namespace switches (setns) apply to one OS thread: keep main on it
	runtime.LockOSThread()
}

type NetConf struct {
	types.NetConf
	MTU int `json:"mtu"`
}

// aliasPrefix marks the host veths of one network: GC finds its attachments by it.
func aliasPrefix(network string) string { return "go-ptp:" + network + ":" }

// hostVethName is derived from the attachment, so DEL and GC find the host side by name.
func hostVethName(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return "gp" + hex.EncodeToString(sum[:])[:11]
}

func loadConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("failed to load netconf: %v", err)
	}
	if conf.IPAM.Type == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam.type is missing", "")
	}
	return conf, nil
}

func hostMask(addr net.IP) net.IPMask {
	if addr.To4() != nil {
		return net.CIDRMask(32, 32)
	}
	return net.CIDRMask(128, 128)
}

// setupPodSide makes the veth pair from inside the pod and wires the pod end: the address with
// its subnet route replaced by "gateway/32 scope link" and "subnet via gateway", as ptp does.
func setupPodSide(netns ns.NetNS, ifName, hostName string, mtu int, result *current.Result) error {
	return netns.Do(func(hostNS ns.NetNS) error {
		_, contVeth, err := ip.SetupVethWithName(ifName, hostName, mtu, "", hostNS)
		if err != nil {
			return err
		}
		pod := &current.Interface{Name: contVeth.Name, Mac: contVeth.HardwareAddr.String(), Sandbox: netns.Path()}
		result.Interfaces = []*current.Interface{{Name: hostName}, pod}
		for _, ipc := range result.IPs {
			ipc.Interface = current.Int(1)
		}
		if err := ipam.ConfigureIface(ifName, result); err != nil {
			return err
		}
		for _, ipc := range result.IPs {
			subnet := &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
			if err := netlink.RouteDel(&netlink.Route{LinkIndex: contVeth.Index, Dst: subnet,
				Scope: netlink.SCOPE_NOWHERE}); err != nil {
				return fmt.Errorf("failed to delete the subnet route %v: %v", subnet, err)
			}
			for _, r := range []netlink.Route{
				{LinkIndex: contVeth.Index, Scope: netlink.SCOPE_LINK, Src: ipc.Address.IP,
					Dst: &net.IPNet{IP: ipc.Gateway, Mask: hostMask(ipc.Gateway)}},
				{LinkIndex: contVeth.Index, Dst: subnet, Gw: ipc.Gateway, Src: ipc.Address.IP},
			} {
				if err := netlink.RouteAdd(&r); err != nil {
					return fmt.Errorf("failed to add route %v: %v", r, err)
				}
			}
		}
		return nil
	})
}

// setupHostSide gives the host veth the gateway as a /32 and routes the pod's address to it.
func setupHostSide(hostName, alias string, result *current.Result) error {
	veth, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("failed to look up %q: %v", hostName, err)
	}
	result.Interfaces[0].Mac = veth.Attrs().HardwareAddr.String()
	if err := netlink.LinkSetAlias(veth, alias); err != nil {
		return fmt.Errorf("failed to label %q: %v", hostName, err)
	}
	for _, ipc := range result.IPs {
		gw := &net.IPNet{IP: ipc.Gateway, Mask: hostMask(ipc.Gateway)}
		if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: gw}); err != nil && !os.IsExist(err) {
			return fmt.Errorf("failed to add %v to %q: %v", gw, hostName, err)
		}
		pod := &net.IPNet{IP: ipc.Address.IP, Mask: hostMask(ipc.Address.IP)}
		if err := ip.AddHostRoute(pod, nil, veth); err != nil && !os.IsExist(err) {
			return fmt.Errorf("failed to route %v to %q: %v", pod, hostName, err)
		}
	}
	return nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("failed to open netns %q: %v", args.Netns, err)
	}
	defer netns.Close()
	// before IPAM: the rollback below must never take another attachment's interface
	if err := netns.Do(func(ns.NetNS) error {
		if _, err := netlinksafe.LinkByName(args.IfName); err == nil {
			return fmt.Errorf("%s already exists in %s", args.IfName, args.Netns)
		}
		return nil
	}); err != nil {
		return err
	}

	r, err := ipam.ExecAdd(conf.IPAM.Type, args.StdinData)
	if err != nil {
		return err
	}
	// Rollback, committed only at the end (bridge.go's success flag): every error path below
	// releases the address and takes the veth pair (both ends) away.
	hostName := hostVethName(conf.Name, args.ContainerID, args.IfName)
	success := false
	defer func() {
		if !success {
			_ = ip.DelLinkByName(hostName)
			_ = ipam.ExecDel(conf.IPAM.Type, args.StdinData)
		}
	}()

	result, err := current.NewResultFromResult(r)
	if err != nil {
		return err
	}
	if len(result.IPs) == 0 {
		return errors.New("IPAM plugin returned no IP address")
	}
	if err := ip.EnableForward(result.IPs); err != nil {
		return fmt.Errorf("could not enable IP forwarding: %v", err)
	}
	if err := setupPodSide(netns, args.IfName, hostName, conf.MTU, result); err != nil {
		return err
	}
	if err := setupHostSide(hostName, aliasPrefix(conf.Name)+args.ContainerID+":"+args.IfName, result); err != nil {
		return err
	}
	success = true
	return types.PrintResult(result, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := ipam.ExecDel(conf.IPAM.Type, args.StdinData); err != nil {
		return err
	}
	// the host end by its name takes the pod end with it, even when CNI_NETNS is empty or gone
	err = ip.DelLinkByName(hostVethName(conf.Name, args.ContainerID, args.IfName))
	if err != nil && err != ip.ErrLinkNotFound {
		return err
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return errors.New("go-ptp: required prevResult missing")
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return err
	}
	result, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return err
	}
	if err := ipam.ExecCheck(conf.IPAM.Type, args.StdinData); err != nil {
		return err
	}
	// the host side: its veth, with a /32 route to every pod address
	hostName := hostVethName(conf.Name, args.ContainerID, args.IfName)
	veth, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("go-ptp: host veth %s is gone: %v", hostName, err)
	}
	for _, ipc := range result.IPs {
		dst := &net.IPNet{IP: ipc.Address.IP, Mask: hostMask(ipc.Address.IP)}
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{Dst: dst, LinkIndex: veth.Attrs().Index},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
		if err != nil || len(routes) == 0 {
			return fmt.Errorf("go-ptp: host route to %v via %s is gone", dst, hostName)
		}
	}
	// the pod side: the interface, its addresses and the result's routes
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("go-ptp: %s is gone from the pod: %v", args.IfName, err)
		}
		if _, isVeth := link.(*netlink.Veth); !isVeth {
			return fmt.Errorf("go-ptp: %s is not a veth", args.IfName)
		}
		if err := ip.ValidateExpectedInterfaceIPs(args.IfName, result.IPs); err != nil {
			return err
		}
		return ip.ValidateExpectedRoute(result.Routes)
	})
}

// cmdGC removes this network's attachments that are not in the runtime's valid list: the veth
// (found by its alias) and the IPAM lease (a DEL on its behalf); then GC goes to IPAM.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a.ContainerID+":"+a.IfName] = true
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return err
	}
	ipamPath, err := invoke.FindInPath(conf.IPAM.Type, filepath.SplitList(os.Getenv("CNI_PATH")))
	if err != nil {
		return err
	}
	var failed []error // go on past errors: one stuck attachment must not keep the rest
	for _, link := range links {
		attachment, ours := strings.CutPrefix(link.Attrs().Alias, aliasPrefix(conf.Name))
		if !ours || valid[attachment] {
			continue
		}
		containerID, ifName, _ := strings.Cut(attachment, ":")
		del := &invoke.Args{Command: "DEL", ContainerID: containerID, IfName: ifName,
			Path: os.Getenv("CNI_PATH")}
		if err := invoke.ExecPluginWithoutResult(context.TODO(), ipamPath, args.StdinData, del, nil); err != nil {
			failed = append(failed, err)
		}
		if err := ip.DelLinkByName(link.Attrs().Name); err != nil && err != ip.ErrLinkNotFound {
			failed = append(failed, err)
		}
	}
	// An IPAM without GC (host-local before 1.5) refuses it: the DELs above already
	// released what this plugin knew of, so that refusal is only logged.
	if err := invoke.DelegateGC(context.TODO(), conf.IPAM.Type, args.StdinData, nil); err != nil {
		fmt.Fprintf(os.Stderr, "go-ptp: IPAM %s GC: %v\n", conf.IPAM.Type, err)
	}
	return errors.Join(failed...)
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	return ipam.ExecStatus(conf.IPAM.Type, args.StdinData)
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus,
		// 1.1.0 (GC, STATUS) is left out: its IPAM, Debian's host-local, serves up to 1.0.0, and
		// the suites check that every version a plugin claims serves ADD, CHECK and DEL.
	}, version.PluginSupports("0.3.1", "0.4.0", "1.0.0"), "go-ptp: a ptp-like CNI plugin (cnilab example)")
}
