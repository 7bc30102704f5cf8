// cim view: the page's logic. Layers from /tilesets.json (3D Tiles) and /panoramas.json (markers), a click on a
// building shows its attributes, a click on a marker opens its Marzipano tiles looking along the panorama's
// heading, "Measure" takes two clicks on the scene and shows the distance, its horizontal part and the height
// difference. `window.cim` holds the state for scripts: cim.ready resolves when the layers are added.
"use strict";

const cim = { layers: {}, markers: [], measurement: null, panorama: null };
window.cim = cim;

function text(tag, content) {
  const el = document.createElement(tag);
  el.textContent = content;
  return el;
}

function addLayer(id, label, object) {
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = true;
  box.dataset.layer = id;
  box.onchange = () => { object.show = box.checked; cim.viewer.scene.requestRender(); };
  const row = document.createElement("label");
  row.append(box, " " + label);
  document.getElementById("layers").append(row, document.createElement("br"));
  cim.layers[id] = object;
}

function layerName(path) {
  const folder = path.split("/").slice(0, -1).join("/") || path;
  if (/terrain/.test(folder)) return "terrain (" + folder + ")";
  if (/building/.test(folder)) return "buildings (" + folder + ")";
  if (/point/.test(folder)) return "points (" + folder + ")";
  return folder;
}

async function addTilesets(viewer) {
  const list = await (await fetch("/tilesets.json")).json();
  const tilesets = [];
  for (const path of list) {
    const tileset = await Cesium.Cesium3DTileset.fromUrl("/data/" + path);
    tileset.cimPath = path;
    viewer.scene.primitives.add(tileset);
    addLayer(path, layerName(path), tileset);
    tilesets.push(tileset);
  }
  return tilesets;
}

// The view from the south above the terrain (the job's extent), else above every tileset.
function home(viewer, tilesets) {
  const terrain = tilesets.filter((t) => /terrain/.test(t.cimPath));
  const sphere = Cesium.BoundingSphere.fromBoundingSpheres((terrain.length ? terrain : tilesets)
    .map((t) => t.boundingSphere));
  viewer.camera.flyToBoundingSphere(sphere, { duration: 0,
    offset: new Cesium.HeadingPitchRange(0, -0.7, sphere.radius * 2.0) });
}

async function addMarkers(viewer) {
  const markers = await (await fetch("/panoramas.json")).json();
  if (!markers.length) return null;
  const source = new Cesium.CustomDataSource("panoramas");
  for (const m of markers) {
    source.entities.add({
      id: "panorama:" + m.name,
      name: m.name,
      position: Cesium.Cartesian3.fromDegrees(m.lon, m.lat, m.height),
      point: { pixelSize: 14, color: Cesium.Color.ORANGE, outlineColor: Cesium.Color.BLACK, outlineWidth: 2,
               disableDepthTestDistance: Number.POSITIVE_INFINITY },
    }).panorama = m;
  }
  await viewer.dataSources.add(source);
  addLayer("panoramas", "panoramas (" + markers.length + ")", source);
  cim.markers = markers;
  return source;
}

function openPanorama(marker) {
  const box = document.getElementById("pano");
  box.hidden = false;
  document.getElementById("pano-title").textContent = marker.name + (marker.datetime ? " · " + marker.datetime : "");
  if (cim.panorama) cim.panorama.viewer.destroy();
  const config = marker.marzipano;
  const base = "/data/" + marker.tiles;
  const viewer = new Marzipano.Viewer(document.getElementById("pano-view"), { stage: { preserveDrawingBuffer: true } });
  const source = Marzipano.ImageUrlSource.fromString(base + config.tileUrl, {
    cubeMapPreviewUrl: base + config.previewUrl, cubeMapPreviewFaceOrder: config.cubeMapPreviewFaceOrder });
  const geometry = new Marzipano.CubeGeometry(config.levels);
  const limiter = Marzipano.RectilinearView.limit.traditional(config.faceSize, 120 * Math.PI / 180);
  const view = new Marzipano.RectilinearView({ yaw: marker.yaw, pitch: 0, fov: Math.PI / 2 }, limiter);
  const scene = viewer.createScene({ source, geometry, view, pinFirstLevel: true });
  scene.switchTo();
  cim.panorama = { name: marker.name, viewer, view, scene };
}

function closePanorama() {
  document.getElementById("pano").hidden = true;
  if (cim.panorama) cim.panorama.viewer.destroy();
  cim.panorama = null;
}

function showAttributes(feature) {
  const info = document.getElementById("info");
  info.replaceChildren();
  cim.selected = null;
  if (!feature) return;
  const table = document.createElement("table");
  for (const id of feature.getPropertyIds()) {
    const row = document.createElement("tr");
    row.append(text("td", id), text("td", String(feature.getProperty(id))));
    table.append(row);
  }
  info.append(table);
  cim.selected = Object.fromEntries(feature.getPropertyIds().map((id) => [id, feature.getProperty(id)]));
}

// -- measuring ---------------------------------------------------------------------------------------------------
const measuring = { on: false, points: [], entities: [] };

function measurement(a, b) {
  const ca = Cesium.Cartographic.fromCartesian(a);
  const cb = Cesium.Cartographic.fromCartesian(b);
  const horizontal = new Cesium.EllipsoidGeodesic(ca, cb).surfaceDistance;
  return { distance: Cesium.Cartesian3.distance(a, b), horizontal, height: cb.height - ca.height,
           a: [a.x, a.y, a.z], b: [b.x, b.y, b.z] };
}

function toggleMeasure(viewer) {
  measuring.on = !measuring.on;
  document.getElementById("measure").classList.toggle("on", measuring.on);
  document.getElementById("measure").textContent = measuring.on ? "Measuring: click two points" : "Measure";
  measuring.points = [];
}

function measureClick(viewer, position) {
  const picked = viewer.scene.pickPosition(position);
  if (!Cesium.defined(picked)) return;
  if (measuring.points.length === 2) {
    measuring.points = [];
    for (const e of measuring.entities) viewer.entities.remove(e);
    measuring.entities = [];
  }
  measuring.points.push(picked);
  measuring.entities.push(viewer.entities.add({ position: picked, point: {
    pixelSize: 8, color: Cesium.Color.YELLOW, disableDepthTestDistance: Number.POSITIVE_INFINITY } }));
  viewer.scene.requestRender();
  if (measuring.points.length < 2) return;
  const [a, b] = measuring.points;
  const m = measurement(a, b);
  measuring.entities.push(viewer.entities.add({ polyline: { positions: [a, b], width: 2,
    material: Cesium.Color.YELLOW, depthFailMaterial: Cesium.Color.YELLOW.withAlpha(0.5) } }));
  document.getElementById("measurement").textContent =
    `distance ${m.distance.toFixed(2)} m\nhorizontal ${m.horizontal.toFixed(2)} m\nheight Δ ${m.height.toFixed(2)} m`;
  cim.measurement = m;
  viewer.scene.requestRender();
}

// -- start -------------------------------------------------------------------------------------------------------
async function main() {
  const viewer = new Cesium.Viewer("view", {
    baseLayer: false, baseLayerPicker: false, geocoder: false, timeline: false, animation: false,
    sceneModePicker: false, navigationHelpButton: false, homeButton: false, fullscreenButton: false,
    infoBox: false, selectionIndicator: false, contextOptions: { webgl: { preserveDrawingBuffer: true } },
    requestRenderMode: true, maximumRenderTimeChange: Infinity,  // draw only when something changed
  });
  cim.viewer = viewer;
  viewer.scene.globe.baseColor = Cesium.Color.fromCssColorString("#3b4452");
  viewer.scene.globe.depthTestAgainstTerrain = false;
  viewer.scene.skyBox.show = false;
  viewer.scene.skyAtmosphere.show = false;
  const layers = document.getElementById("layers");
  layers.textContent = "";
  const tilesets = await addTilesets(viewer);
  const markers = await addMarkers(viewer);
  if (!tilesets.length && !markers) layers.textContent = "no tileset.json or panorama in this folder";
  if (tilesets.length) home(viewer, tilesets);
  else if (markers) await viewer.zoomTo(markers, new Cesium.HeadingPitchRange(0, -0.7, 0));
  document.getElementById("measure").onclick = () => toggleMeasure(viewer);
  document.getElementById("pano-close").onclick = closePanorama;
  const handler = new Cesium.ScreenSpaceEventHandler(viewer.scene.canvas);
  handler.setInputAction((click) => {
    if (measuring.on) return measureClick(viewer, click.position);
    // points often lie in front of what the user means: look through them for a marker, then a feature
    const picked = viewer.scene.drillPick(click.position, 8);
    const marker = picked.find((p) => p.id && p.id.panorama);
    if (marker) return openPanorama(marker.id.panorama);
    showAttributes(picked.find((p) => p instanceof Cesium.Cesium3DTileFeature) || null);
  }, Cesium.ScreenSpaceEventType.LEFT_CLICK);
  return { tilesets: tilesets.length, markers: cim.markers.length };
}

// Resolves when every tileset has loaded what the current view needs and a frame was drawn after that.
cim.idle = () => new Promise((resolve) => {
  const scene = cim.viewer.scene;
  const check = () => {
    const busy = Object.values(cim.layers).some((l) => l instanceof Cesium.Cesium3DTileset && l.show &&
                                                      !l.tilesLoaded);
    if (busy) return;
    scene.postRender.removeEventListener(check);
    scene.postRender.addEventListener(function once() { scene.postRender.removeEventListener(once); resolve(); });
    scene.requestRender();
  };
  scene.postRender.addEventListener(check);
  scene.requestRender();
});

cim.ready = main();
