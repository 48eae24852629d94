import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// relative asset paths: the test serves the build under any prefix of the API's origin
export default defineConfig({ plugins: [react()], base: "./", logLevel: "warn" });
