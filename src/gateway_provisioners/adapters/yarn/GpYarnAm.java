/*
 * gateway-provisioners' ApplicationMaster for kernels submitted through the ResourceManager's REST API.
 *
 * YARN expires an application master that does not register and heartbeat through the AMRM protocol within
 * yarn.am.liveness-monitor.expiry-interval-ms. The kernel's agent speaks no Hadoop RPC, so this small AM does it
 * for the agent, in the same container: it registers, starts the command it is given (the agent's bootstrap) as its
 * child, heartbeats while the child runs, and unregisters with the child's outcome. It asks for no containers.
 *
 * It ships as source inside the Python package and runs with Java's single-file source launcher
 * (java -cp <Hadoop's jars> GpYarnAm.java COMMAND...), so neither the server nor the nodes need anything of ours
 * compiled: the nodes' own Java (11 or later, with the compiler module, as in every JDK) and Hadoop jars suffice.
 */

import java.io.IOException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.hadoop.net.NetUtils;
import org.apache.hadoop.yarn.api.records.FinalApplicationStatus;
import org.apache.hadoop.yarn.client.api.AMRMClient;
import org.apache.hadoop.yarn.client.api.AMRMClient.ContainerRequest;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

public final class GpYarnAm {
    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            System.err.println("gp-yarn-am: usage: GpYarnAm COMMAND [ARG...]");
            System.exit(2);
        }
        YarnConfiguration conf = new YarnConfiguration();
        AMRMClient<ContainerRequest> rm = AMRMClient.createAMRMClient();
        rm.init(conf);
        rm.start();
        rm.registerApplicationMaster(NetUtils.getHostname(), -1, "");
        System.err.println("gp-yarn-am: registered with the ResourceManager; starting " + args[0]);

        Process agent;
        try {
            agent = new ProcessBuilder(args).inheritIO().start();
        } catch (IOException e) {
            // Say why in the application's diagnostics (e.g. no such Python on this node), not only in a log.
            String why = "gp-yarn-am: cannot start " + String.join(" ", args) + ": " + e.getMessage();
            System.err.println(why);
            rm.unregisterApplicationMaster(FinalApplicationStatus.FAILED, why, "");
            rm.stop();
            System.exit(127);
            return;
        }
        // The application is killed (NodeManager's SIGTERM): pass it on, so that the agent ends its kernel, and do
        // not unregister (the RM is killing the application; unregistering would turn KILLED into FINISHED).
        AtomicBoolean killed = new AtomicBoolean();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            killed.set(true);
            stop(agent);
        }, "gp-yarn-am-stop"));

        // Heartbeat well inside the RM's expiry (every AM does this; Spark's every 3 s, MapReduce's every 1 s).
        long expiry = conf.getLong(YarnConfiguration.RM_AM_EXPIRY_INTERVAL_MS,
                YarnConfiguration.DEFAULT_RM_AM_EXPIRY_INTERVAL_MS);
        long interval = Math.max(200L, Math.min(3000L, expiry / 5));
        while (!agent.waitFor(interval, TimeUnit.MILLISECONDS)) {
            try {
                rm.allocate(0.5f);
            } catch (Exception e) {
                // The RM client retries lost connections itself (failover included): this is final, e.g. the
                // RM no longer knows this attempt. Without an AM the kernel cannot stay.
                System.err.println("gp-yarn-am: heartbeat failed, stopping the agent: " + e);
                stop(agent);
                System.exit(1);
            }
        }
        int code = agent.exitValue();
        if (killed.get()) {
            return;
        }
        FinalApplicationStatus status = code == 0 ? FinalApplicationStatus.SUCCEEDED : FinalApplicationStatus.FAILED;
        rm.unregisterApplicationMaster(status, "the kernel's agent exited with code " + code, "");
        rm.stop();
        System.exit(code);
    }

    private static void stop(Process agent) {
        if (!agent.isAlive()) {
            return;
        }
        agent.destroy();  // SIGTERM
        try {
            if (!agent.waitFor(10, TimeUnit.SECONDS)) {
                agent.destroyForcibly();
            }
        } catch (InterruptedException e) {
            agent.destroyForcibly();
        }
    }
}
